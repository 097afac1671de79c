"""Sluice transforms plugin: record and batch transforms and safe expressions."""

from __future__ import annotations

__version__ = "0.1.0"
