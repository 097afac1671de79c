"""Sluice transforms plugin: record and batch transforms, safe expressions and HTTP enrichment."""

from __future__ import annotations

__version__ = "0.1.0"
