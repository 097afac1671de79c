"""Airflow DAG factory for Sluice jobs: every job file becomes a
``plan → extract → transform → load → finalize`` DAG.

- ``factory``: job files → DAGs (imports Airflow; used by ``dags/sluice_dags.py``).
- ``stages``: the stages as plain Sluice runs over a staging area (no Airflow import).
- ``staging``, ``staged_source``: where stages hand records over, and reading them back.
- ``reconcile``: the counts every stage hands on, and the check that they add up.
- ``connections``, ``plugin``: Airflow connections as credentials (``connection:``, ``secret('airflow:...')``).

Importing this package (or its plugin module) does not import Airflow.
"""

__version__ = "0.1.0"
