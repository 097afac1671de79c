"""Sluice HTTP plugin: a paginated API source, an HTTP sink and per-record HTTP enrichment."""

from __future__ import annotations

__version__ = "0.1.0"
