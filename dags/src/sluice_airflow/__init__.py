"""Airflow DAG factory for Sluice jobs."""

__version__ = "0.1.0"
