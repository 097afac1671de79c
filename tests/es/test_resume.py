"""Resume: a sliced extraction stopped after some batches continues each slice where it stopped."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sluice.testing import read_jsonl, run_job


def job(url: str, pagination: str) -> dict[str, Any]:
    return {
        "job_name": "resume",
        "runtime": {"retry": {"attempts": 1}, "max_in_flight_batches": 2},
        "source": {"type": "opensearch", "hosts": [url], "index": "logs", "slices": 3, "page_size": 50,
                   "pagination": pagination},
        # one part file per batch, so every batch is durable and checkpointed as soon as it is written
        "destination": {"type": "jsonl", "path": "out", "max_records_per_file": 50},
    }


@pytest.mark.parametrize("pagination", ["pit", "scroll"])
def test_a_stopped_sliced_extraction_resumes_and_delivers_every_document_once(
        os_url: str, seeded: Any, fault_proxy: Any, pagination: str) -> None:
    loaded = seeded("logs", 600)  # 200 per slice, 4 pages each
    proxy = fault_proxy(os_url)
    state = {"pages": 0}

    def fail_the_seventh_page(status: int, headers: dict, request: bytes, body: bytes) -> tuple[int, dict, bytes]:
        state["pages"] += 1
        if state["pages"] == 7:
            return 500, headers, b'{"error":{"type":"node_disconnected_exception","reason":"gone"},"status":500}'
        return status, headers, body

    proxy.add(method="POST", path=r"/_search(\?|/scroll|$)", rewrite=fail_the_seventh_page, times=10_000)
    first = run_job(job(proxy.url, pagination))
    assert first.status == "failed" and "--resume" in first.error
    # PITs and scrolls are closed also when the run fails
    if pagination == "pit":
        assert proxy.count("DELETE", r"_search/point_in_time") == proxy.count("POST", r"_search/point_in_time") == 1
    else:
        opened = proxy.count("POST", r"^/logs/_search\?.*scroll=")
        assert opened >= 1 and proxy.count("DELETE", r"/_search/scroll") == opened
    assert 0 < first.written < 600
    delivered = len(read_jsonl("out"))
    assert delivered == first.written

    second = run_job(job(proxy.url, pagination), resume=True)
    assert second.status == "succeeded", second.error
    assert second.reconciled
    assert second.read < 600, "the resumed run must continue, not start over"
    ids = Counter(r["_id"] for r in read_jsonl("out"))
    assert set(ids) == {d["_id"] for d in loaded}
    assert max(ids.values()) == 1, "every document exactly once"
    assert first.written + second.written == 600


@pytest.mark.parametrize("pagination", ["pit", "scroll"])
def test_resume_refuses_a_changed_slice_count_instead_of_reading_documents_twice(
        os_url: str, seeded: Any, fault_proxy: Any, pagination: str) -> None:
    seeded("logs", 600)
    proxy = fault_proxy(os_url)
    state = {"pages": 0}

    def fail_the_fifth_page(status: int, headers: dict, request: bytes, body: bytes) -> tuple[int, dict, bytes]:
        state["pages"] += 1
        if state["pages"] == 5:
            return 500, headers, b'{"error":{"type":"node_disconnected_exception","reason":"gone"},"status":500}'
        return status, headers, body

    proxy.add(method="POST", path=r"/_search(\?|/scroll|$)", rewrite=fail_the_fifth_page, times=10_000)
    first = run_job(job(proxy.url, pagination))
    assert first.status == "failed" and 0 < first.written < 600
    before = sorted(p.name for p in __import__("pathlib").Path("out").iterdir())
    changed = job(os_url, pagination)
    changed["source"]["slices"] = 2
    second = run_job(changed, resume=True)
    assert second.status == "failed" and second.read == 0
    assert "the source's partitioning changed since the checkpoints were saved" in second.error
    assert "partitions no longer there: slice-0-of-3, slice-1-of-3, slice-2-of-3" in second.error
    assert sorted(p.name for p in __import__("pathlib").Path("out").iterdir()) == before  # nothing touched
    again = run_job(changed)  # without --resume: the interval starts over, exactly once
    assert again.status == "succeeded" and len({r["_id"] for r in read_jsonl("out")}) == len(read_jsonl("out")) == 600
