"""Transient failures, injected by a proxy in front of the real server, are retried and counted."""

from __future__ import annotations

from typing import Any

import orjson

from sluice.testing import read_jsonl, run_job

from .helpers import FAST_RETRY, docs, fetch_all, write_input


def fail_items(every: int, status: int, etype: str) -> Any:
    """A response rewrite turning every ``every``-th bulk item into a ``status`` failure."""

    def rewrite(code: int, headers: dict, request: bytes, body: bytes) -> tuple[int, dict, bytes]:
        data = orjson.loads(body)
        for i, item in enumerate(data["items"]):
            if i % every == 0:
                result = next(iter(item.values()))
                result["status"] = status
                result["error"] = {"type": etype, "reason": "injected by the test proxy"}
                data["errors"] = True
        return code, headers, orjson.dumps(data)

    return rewrite


def load_through(proxy_url: str, n: int, **runtime: Any) -> Any:
    return run_job({
        "job_name": "load", "runtime": {"retry": FAST_RETRY, **runtime},
        "source": {"type": "jsonl", "path": write_input(docs(n))},
        "destination": {"type": "elasticsearch", "hosts": [proxy_url], "index": "target", "batch_size": 500},
    })


def test_bulk_items_answering_429_and_503_are_resent_until_written(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    proxy.add(method="POST", path=r"/_bulk", rewrite=fail_items(3, 429, "es_rejected_execution_exception"), times=2)
    proxy.add(method="POST", path=r"/_bulk", rewrite=fail_items(5, 503, "unavailable_shards_exception"), times=1)
    summary = load_through(proxy.url, 1000)
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled and summary.written == 1000 and summary.dead_lettered == {}
    assert len(fetch_all(os_url, "target")) == 1000
    assert summary.retries == 3  # three bulk requests had items to re-send
    # the first chunk of 500: every 3rd item fails (167), then every 3rd of those (56), then every 5th (12)
    assert summary.counters["es_bulk_items_retried"] == 167 + 56 + 12
    assert proxy.count("POST", r"/_bulk") == 2 + 3


def test_whole_bulk_requests_answering_429_503_or_dropped_are_retried(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    proxy.add(method="POST", path=r"/_bulk", status=503, times=2,
              body=b'{"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}')
    proxy.add(method="POST", path=r"/_bulk", status=429,
              body=b'{"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}')
    proxy.add(method="POST", path=r"/_bulk", drop=True)
    summary = load_through(proxy.url, 600)
    assert summary.status == "succeeded", summary.error
    assert summary.written == 600 and len(fetch_all(os_url, "target")) == 600
    assert summary.retries == 4


def test_items_that_keep_failing_fail_the_run_without_losing_them(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    proxy.add(method="POST", path=r"/_bulk", rewrite=fail_items(1, 429, "es_rejected_execution_exception"),
              times=10_000)
    summary = run_job({
        "job_name": "load", "runtime": {"retry": {**FAST_RETRY, "attempts": 2}},
        "source": {"type": "jsonl", "path": write_input(docs(20))},
        "destination": {"type": "elasticsearch", "hosts": [proxy.url], "index": "target"},
    })
    assert summary.status == "failed"
    assert "20 bulk items not written yet" in summary.error and "es_rejected_execution_exception" in summary.error
    assert summary.written == 0 and summary.dead_lettered == {}  # still to do on --resume, not dropped


def test_searches_answering_503_are_retried(os_url: str, seeded: Any, fault_proxy: Any) -> None:
    seeded("logs", 300)
    proxy = fault_proxy(os_url)
    proxy.add(method="POST", path=r"^/_search(\?|$)", status=503, times=2,
              body=b'{"error":{"type":"search_phase_execution_exception","reason":"busy"}}')
    summary = run_job({
        "job_name": "extract", "runtime": {"retry": FAST_RETRY},
        "source": {"type": "opensearch", "hosts": [proxy.url], "index": "logs", "pagination": "pit",
                   "page_size": 100},
        "destination": {"type": "jsonl", "path": "out"},
    })
    assert summary.status == "succeeded", summary.error
    assert summary.retries == 2 and len({r["_id"] for r in read_jsonl("out")}) == 300


def test_a_scroll_that_fails_midway_is_reopened_after_the_delivered_hits(
        os_url: str, seeded: Any, fault_proxy: Any) -> None:
    seeded("logs", 500)
    proxy = fault_proxy(os_url)
    proxy.add(method="POST", path=r"/_search/scroll", drop=True, times=1)
    proxy.add(method="POST", path=r"/_search/scroll", status=502, times=1)
    summary = run_job({
        "job_name": "extract", "runtime": {"retry": FAST_RETRY},
        "source": {"type": "opensearch", "hosts": [proxy.url], "index": "logs", "pagination": "scroll",
                   "page_size": 100},
        "destination": {"type": "jsonl", "path": "out"},
    })
    assert summary.status == "succeeded", summary.error
    records = read_jsonl("out")
    assert len(records) == 500 and len({r["_id"] for r in records}) == 500
    assert summary.retries == 2
    assert proxy.count("POST", r"^/logs/_search\?") == 3  # opened, then reopened twice


def test_a_bulk_request_refused_as_too_large_is_sent_in_halves(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    proxy.add(method="POST", path=r"/_bulk", status=413, times=2,
              body=b'{"error":{"type":"content_too_long_exception","reason":"request too large"}}')
    summary = load_through(proxy.url, 400)  # one request of 400 refused, then 200 refused, then 100 + 100 + 200
    assert summary.status == "succeeded", summary.error
    assert summary.written == 400 and len(fetch_all(os_url, "target")) == 400
    assert proxy.count("POST", r"/_bulk") == 5


def test_a_long_scroll_survives_a_connection_dropped_every_ninth_request(
        os_url: str, seeded: Any, fault_proxy: Any) -> None:
    """Each drop reopens the scroll after the delivered hits: re-paging through them takes large
    id-only pages, and does not count against the retry budget while it gets further than before."""
    seeded("logs", 6000)
    proxy = fault_proxy(os_url)
    drops = proxy.add(method="POST", path=r"_search", drop=True, every=9)
    summary = run_job({
        "job_name": "extract", "runtime": {"retry": FAST_RETRY, "batch_size": 100},
        "source": {"type": "opensearch", "hosts": [proxy.url], "index": "logs", "pagination": "scroll",
                   "page_size": 100, "slices": 2},
        "destination": {"type": "jsonl", "path": "out"},
    })
    assert summary.status == "succeeded", summary.error
    records = read_jsonl("out")
    assert len(records) == 6000 and len({r["_id"] for r in records}) == 6000
    assert summary.retries == drops.fired >= 3  # every drop happened and was absorbed
