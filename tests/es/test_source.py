"""Extraction against a real OpenSearch-compatible server: both flavours, both pagination modes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sluice.testing import read_jsonl, run_job

from .helpers import FAST_RETRY

FLAVOURS = [
    pytest.param({"flavor": "opensearch", "pagination": "pit"}, id="opensearch-pit"),
    pytest.param({"flavor": "opensearch", "pagination": "scroll"}, id="opensearch-scroll"),
    pytest.param({"flavor": "elasticsearch", "compat_headers": False, "pagination": "scroll"},
                 id="elasticsearch-scroll"),
    pytest.param({}, id="detected-default"),
]


def extract(url: str, out: str = "out", **source: Any) -> tuple[Any, list[dict[str, Any]]]:
    block = {"type": "elasticsearch", "hosts": [url], "index": "logs", **source}
    summary = run_job({"job_name": "extract", "runtime": {"retry": FAST_RETRY}, "source": block,
                       "destination": {"type": "jsonl", "path": out}})
    return summary, read_jsonl(out) if summary.status == "succeeded" else []


@pytest.mark.parametrize("options", FLAVOURS)
def test_sliced_extraction_reads_every_document_exactly_once(os_url: str, seeded: Any, options: dict) -> None:
    loaded = seeded("logs", 1500)
    summary, records = extract(os_url, slices=3, page_size=200, **options)
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled and summary.read == summary.written == 1500
    assert summary.partitions == 3
    ids = Counter(r["_id"] for r in records)
    assert set(ids) == {d["_id"] for d in loaded} and max(ids.values()) == 1
    by_id = {r["_id"]: r for r in records}
    assert by_id["d-7"] == {"_id": "d-7", "n": 7, "app": "api", "msg": "message 7", "ts": "2024-01-02T07:00:00Z"}


@pytest.mark.parametrize("pagination", ["pit", "scroll"])
def test_time_range_query_fields_and_index_are_applied(os_url: str, seeded: Any, pagination: str) -> None:
    loaded = seeded("logs", 600)
    query = {"range": {"ts": {"gte": "{{ ds }}", "lt": "{{ next_ds }}"}}}
    summary, records = extract(os_url, query=query, fields=["n"], include_index=True, slices=2, page_size=50,
                               pagination=pagination)
    assert summary.status == "succeeded", summary.error
    expected = {d["_id"] for d in loaded if d["ts"].startswith("2024-01-01")}  # the job runs for ds=2024-01-01
    assert {r["_id"] for r in records} == expected and len(records) == len(expected) == 200
    assert all(set(r) == {"_id", "_index", "n"} and r["_index"] == "logs" for r in records)


def test_include_id_false_gives_the_bare_source(os_url: str, seeded: Any) -> None:
    seeded("logs", 10)
    summary, records = extract(os_url, include_id=False)
    assert summary.status == "succeeded", summary.error
    assert len(records) == 10 and all("_id" not in r for r in records)


def test_patterns_and_several_indices(os_url: str, seeded: Any) -> None:
    seeded("logs-a", 30)
    seeded("logs-b", 20, start=30)
    seeded("other", 5, start=100)
    summary, records = extract(os_url, index="logs-*", include_index=True)
    assert summary.status == "succeeded", summary.error
    assert Counter(r["_index"] for r in records) == {"logs-a": 30, "logs-b": 20}


def test_an_empty_index_yields_nothing_and_succeeds(os_url: str, seeded: Any) -> None:
    seeded("logs", 0, mappings={"properties": {"n": {"type": "long"}}})
    summary, records = extract(os_url, slices=2)
    assert summary.status == "succeeded", summary.error
    assert summary.read == 0 and records == []


def test_a_missing_index_is_a_clear_error(os_url: str) -> None:
    summary, _ = extract(os_url, index="nope")
    assert summary.status == "failed"
    assert "'nope' does not exist" in summary.error and os_url in summary.error


def test_an_expired_pit_is_reopened_and_the_walk_continues(os_url: str, seeded: Any, fault_proxy: Any) -> None:
    """The first search after two pages finds its PIT gone (404 search_context_missing): the slice
    opens a new PIT and continues after the last sort values, with no document lost or repeated."""
    seeded("logs", 500)
    proxy = fault_proxy(os_url)
    gone = (b'{"error":{"root_cause":[{"type":"search_context_missing_exception","reason":"No search context"}],'
            b'"type":"search_phase_execution_exception","reason":"all shards failed",'
            b'"caused_by":{"type":"search_context_missing_exception","reason":"No search context"}},"status":404}')
    state = {"searches": 0}

    def expire_third(status: int, headers: dict, request: bytes, body: bytes) -> tuple[int, dict, bytes]:
        state["searches"] += 1
        return (404, headers, gone) if state["searches"] == 3 else (status, headers, body)

    proxy.add(method="POST", path=r"^/_search", rewrite=expire_third, times=1000)
    summary, records = extract(proxy.url, pagination="pit", page_size=100)
    assert summary.status == "succeeded", summary.error
    assert len(records) == 500 and len({r["_id"] for r in records}) == 500
    assert proxy.count("POST", r"_search/point_in_time") == 2  # opened, then reopened
    assert proxy.count("DELETE", r"_search/point_in_time") == 2  # both are closed at the end


def test_a_pit_sort_orders_the_walk_and_is_the_checkpoint(os_url: str, seeded: Any) -> None:
    seeded("logs", 250)
    summary, records = extract(os_url, pagination="pit", sort=[{"n": "desc"}], page_size=100)
    assert summary.status == "succeeded", summary.error
    assert [r["n"] for r in records] == list(range(249, -1, -1))


def test_an_alias_is_read_like_an_index(os_url: str, seeded: Any) -> None:
    from opensearchpy import OpenSearch

    seeded("logs-2024", 40)
    OpenSearch(hosts=[os_url]).indices.put_alias(index="logs-2024", name="logs")
    summary, records = extract(os_url, index="logs", include_index=True, pagination="pit", slices=2)
    assert summary.status == "succeeded", summary.error
    assert len(records) == 40 and {r["_index"] for r in records} == {"logs-2024"}
