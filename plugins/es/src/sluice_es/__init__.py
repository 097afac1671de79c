"""Sluice Elasticsearch/OpenSearch plugin."""

__version__ = "0.1.0"
