"""Fixtures for the Elasticsearch/OpenSearch plugin tests: a fresh osmem clone with seeded indices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .helpers import bulk_load, docs


@pytest.fixture
def os_url(osmem_clone: Any) -> str:
    """URL of an isolated OpenSearch-compatible cluster for this test."""
    return str(osmem_clone.url)


@pytest.fixture
def seeded(os_url: str) -> Callable[..., list[dict[str, Any]]]:
    """Seed an index: ``seeded("logs", 500)`` returns the documents loaded."""

    def seed(index: str, n: int, start: int = 0, mappings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        records = docs(n, start)
        bulk_load(os_url, index, records, mappings)
        return records

    return seed
