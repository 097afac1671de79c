"""The HTTP source and http_enrich pass core's conformance suites (the sink's is in test_http_sink)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluice.testing.conformance import SourceContract, TransformContract

SAMPLE = [
    {"app": "frontend", "host": "web-1", "level": "INFO", "latency_ms": 120, "user": {"id": "u1"}},
    {"app": "checkout", "host": "web-2", "level": "ERROR", "latency_ms": "slow", "user": {"id": "u2"}},
    {"app": "frontend", "host": "web-3", "level": "DEBUG", "user": {}},
    {"weird": [1, {"x": None}]},
]


def accounts(seen: Any) -> tuple[int, dict[str, str], bytes]:
    """23 records per account, 10 per page, behind a cursor."""
    account, start = seen.path.rsplit("/", 1)[1], int(seen.query.get("cursor", 0))
    items = [{"account": account, "n": i} for i in range(start, min(start + 10, 23))]
    nxt = str(start + 10) if start + 10 < 23 else None
    return 200, {"content-type": "application/json"}, json.dumps({"data": items, "next": nxt}).encode()


class TestHttpSourceCursor(SourceContract):
    @pytest.fixture
    def source_block(self, api: Any) -> dict[str, Any]:
        api.route("/accounts/", accounts)
        return {"type": "http", "url": api.url + "/accounts/{{ partition.value }}", "records": "data",
                "pagination": {"type": "cursor", "next": "next"}, "partitions": {"values": ["a", "b", "c"]}}

    @pytest.fixture
    def expected_records(self) -> int:
        return 3 * 23


class TestHttpSourcePages(SourceContract):
    @pytest.fixture
    def source_block(self, api: Any) -> dict[str, Any]:
        def pages(seen: Any) -> tuple[int, dict[str, str], bytes]:
            page = int(seen.query["page"])
            items = [{"chunk": seen.query["since"], "n": i} for i in range((page - 1) * 10, min(page * 10, 25))]
            return 200, {"content-type": "application/json"}, json.dumps(items).encode()

        api.route("/pages", pages)
        return {"type": "http", "url": api.url + "/pages", "params": {"since": "{{ partition.start }}"},
                "pagination": {"type": "page", "size": 10}, "partitions": {"chunk": "6h"}}

    @pytest.fixture
    def expected_records(self) -> int:
        return 4 * 25


class TestHttpEnrich(TransformContract):
    @pytest.fixture
    def transform_block(self, api: Any) -> dict[str, Any]:
        return {"type": "http_enrich", "url": api.url + "/users/{{ record.user.id | default('none') }}",
                "into": "profile", "retry": {"attempts": 1}}

    @pytest.fixture
    def sample_records(self) -> list[dict[str, Any]]:
        return SAMPLE
