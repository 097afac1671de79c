"""The conformance suites every Sluice source and sink must pass, run against a real server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sluice.testing.conformance import SinkContract, SourceContract

from .helpers import fetch_all


class TestPitSource(SourceContract):
    @pytest.fixture
    def source_block(self, os_url: str, seeded: Any) -> dict[str, Any]:
        seeded("logs", 45)
        return {"type": "elasticsearch", "hosts": [os_url], "index": "logs", "slices": 2, "pagination": "pit"}

    @pytest.fixture
    def expected_records(self) -> int:
        return 45


class TestScrollSource(SourceContract):
    @pytest.fixture
    def source_block(self, os_url: str, seeded: Any) -> dict[str, Any]:
        seeded("logs", 45)
        return {"type": "opensearch", "hosts": [os_url], "index": "logs", "slices": 2, "pagination": "scroll"}

    @pytest.fixture
    def expected_records(self) -> int:
        return 45


class TestElasticsearchScrollSource(SourceContract):
    @pytest.fixture
    def source_block(self, os_url: str, seeded: Any) -> dict[str, Any]:
        seeded("logs", 30)
        return {"type": "elasticsearch", "hosts": [os_url], "index": "logs", "flavor": "elasticsearch",
                "compat_headers": False, "pagination": "scroll"}

    @pytest.fixture
    def expected_records(self) -> int:
        return 30


class TestSink(SinkContract):
    prunes_partitions = False  # an index cannot tell which partition wrote a document

    @pytest.fixture
    def sink_block(self, os_url: str) -> dict[str, Any]:
        return {"type": "elasticsearch", "hosts": [os_url], "index": "target"}

    @pytest.fixture
    def read_back(self, os_url: str) -> Callable[[], list[dict[str, Any]]]:
        return lambda: list(fetch_all(os_url, "target").values())


class TestElasticsearchFlavourSink(TestSink):
    @pytest.fixture
    def sink_block(self, os_url: str) -> dict[str, Any]:
        return {"type": "elasticsearch", "hosts": [os_url], "index": "target", "flavor": "elasticsearch",
                "compat_headers": False, "refresh": True}


class TestSortedPitSource(SourceContract):
    """PIT with a user sort (unique per document): checkpoints are that sort's values."""

    @pytest.fixture
    def source_block(self, os_url: str, seeded: Any) -> dict[str, Any]:
        seeded("logs", 40)
        return {"type": "elasticsearch", "hosts": [os_url], "index": "logs", "pagination": "pit",
                "sort": [{"n": "desc"}]}

    @pytest.fixture
    def expected_records(self) -> int:
        return 40
