"""Sluice S3 plugin."""

__version__ = "0.1.0"
