"""Every transform of the plugin passes core's TransformContract."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.testing.conformance import TransformContract

SAMPLE = [
    {"app": "frontend", "host": "web-1", "level": "INFO", "latency_ms": 120, "user": {"id": "u1"}},
    {"app": "checkout", "host": "web-2", "level": "ERROR", "latency_ms": "slow", "user": {"id": "u2"}},
    {"app": "frontend", "host": "web-3", "level": "DEBUG", "user": {}},
    {"weird": [1, {"x": None}]},
]

BLOCKS: dict[str, dict[str, Any]] = {
    "filter": {"type": "filter", "where": "record.get('app') == 'frontend'"},
    "rename": {"type": "rename", "fields": {"host": "source.host"}},
    "select": {"type": "select", "fields": ["app", "user.*"]},
    "drop": {"type": "drop", "fields": ["lev*"]},
    "cast": {"type": "cast", "fields": {"latency_ms": "int"}},
    "set": {"type": "set", "fields": {"id": "{{ record.host }}-{{ ds }}", "s": "record.latency_ms / 1000"}},
    "flatten": {"type": "flatten"},
    "unflatten": {"type": "unflatten"},
    "python": {"type": "python", "callable": "transforms.userfuncs:tag"},
    "dedup": {"type": "dedup", "keys": ["app"]},
    "aggregate": {"type": "aggregate", "group_by": ["app"], "metrics": {"n": {"op": "count"}}},
    "sort": {"type": "sort", "keys": ["latency_ms"]},
    "sample": {"type": "sample", "rate": 0.5},
}


class TestEveryTransform(TransformContract):
    @pytest.fixture(params=sorted(BLOCKS))
    def transform_block(self, request: pytest.FixtureRequest) -> dict[str, Any]:
        return BLOCKS[request.param]

    @pytest.fixture
    def sample_records(self) -> list[dict[str, Any]]:
        return SAMPLE


def test_every_registered_type_is_covered() -> None:
    from sluice_transforms.plugin import sluice_transforms

    assert {k.type for k in sluice_transforms()} == set(BLOCKS)  # http_enrich: tests/http
