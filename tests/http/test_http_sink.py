"""The HTTP sink against a real local API: JSON arrays, NDJSON and one request per record; request
limits; idempotency keys; retries of 429/5xx; 4xx per request and per item; the two-phase contract."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from sluice import Batch, ConfigError
from sluice.testing import build, make_context, run_job
from sluice.testing.conformance import SinkContract

FAST_RETRY = {"attempts": 4, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}
JSON = {"content-type": "application/json"}


class Store:
    """What an idempotent ingest API keeps: the records of each idempotency key (a re-send replaces)."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[Any]] = {}
        self.lock = threading.Lock()

    def ingest(self, seen: Any) -> tuple[int, dict[str, str], bytes]:
        if "ndjson" in seen.headers.get("content-type", ""):
            records = [json.loads(line) for line in seen.body.splitlines() if line]
        else:
            body = json.loads(seen.body)
            records = body["items"] if isinstance(body, dict) and "items" in body else body
            records = records if isinstance(records, list) else [records]
        with self.lock:
            self.by_key[seen.headers.get("idempotency-key", f"none-{len(self.by_key)}")] = records
        return 200, JSON, json.dumps({"accepted": len(records)}).encode()

    def records(self) -> list[Any]:
        with self.lock:
            return [r for key in sorted(self.by_key) for r in self.by_key[key]]


@pytest.fixture
def store(api: Any) -> Store:
    store = Store()
    api.route("/ingest", store.ingest)
    return store


def sink(api: Any, **options: Any) -> dict[str, Any]:
    return {"type": "http", "url": api.url + "/ingest", "retry": FAST_RETRY, **options}


def write(block: dict[str, Any], records: list[Any], partition: str = "p", seq: int = 0) -> Any:
    s = build("sink", block)
    try:
        return s.write(Batch([dict(r) for r in records], partition, seq))
    finally:
        s.close()


RECORDS = [{"n": i, "text": "x" * 40} for i in range(25)]


def test_json_array_batches_cut_by_records_with_an_idempotency_key_each(api: Any, store: Store) -> None:
    result = write(sink(api, max_batch_records=10), RECORDS, "acct-1", 3)
    assert result.written == 25 and result.dead_letters == [] and result.durable
    hits = api.hits("/ingest")
    assert [len(json.loads(h.body)) for h in hits] == [10, 10, 5]
    run_id = make_context().run_id
    assert [h.headers["idempotency-key"] for h in hits] == [f"{run_id}/acct-1/3/{i}" for i in range(3)]
    assert {h.headers["content-type"] for h in hits} == {"application/json"} and {h.method for h in hits} == {"POST"}
    assert store.records() == RECORDS


def test_ndjson_batches_cut_by_bytes(api: Any, store: Store) -> None:
    records = [{"n": 10 + i, "text": "x" * 40} for i in range(25)]  # every line the same length
    line = len(json.dumps(records[0], separators=(",", ":"))) + 1
    write(sink(api, mode="ndjson", max_batch_bytes=line * 4 + 2, method="PUT"), records)
    hits = api.hits("/ingest")
    assert [len(h.body.splitlines()) for h in hits] == [4] * 6 + [1]
    assert all(len(h.body) <= line * 4 + 2 for h in hits) and {h.method for h in hits} == {"PUT"}
    assert hits[0].headers["content-type"] == "application/x-ndjson"
    assert store.records() == records


def test_an_envelope_wraps_the_array(api: Any, store: Store) -> None:
    write(sink(api, envelope="items"), RECORDS[:2])
    assert json.loads(api.hits("/ingest")[0].body) == {"items": RECORDS[:2]}


def test_one_request_per_record_with_a_per_record_url(api: Any) -> None:
    api.route("/users/", lambda seen: (200, JSON, b"{}"))
    result = write({"type": "http", "url": api.url + "/users/{{ record.n }}", "mode": "record", "method": "PUT",
                    "max_in_flight": 4}, RECORDS[:6], "p", 7)
    assert result.written == 6
    hits = sorted(api.hits("/users/"), key=lambda h: h.path)
    assert [h.path for h in hits] == [f"/users/{i}" for i in range(6)]
    assert [json.loads(h.body) for h in hits] == RECORDS[:6]
    assert sorted(h.headers["idempotency-key"].rsplit("/", 1)[1] for h in hits) == [str(i) for i in range(6)]


def test_429_and_5xx_are_retried_with_the_same_key(api: Any, store: Store) -> None:
    api.add("/ingest", status=429, headers={"Retry-After": "0.2"})
    api.add("/ingest", status=502)
    ctx = make_context()
    s = build("sink", sink(api), ctx)
    result = s.write(Batch([dict(r) for r in RECORDS[:3]], "p", 0))
    s.close()
    hits = api.hits("/ingest")
    assert result.written == 3 and len(hits) == 3 and ctx.metrics.retries == 2
    assert len({h.headers["idempotency-key"] for h in hits}) == 1
    assert hits[1].at - hits[0].at >= 0.19
    assert store.records() == RECORDS[:3]


def test_a_4xx_dead_letters_the_whole_request_with_status_and_body(api: Any, store: Store) -> None:
    api.add("/ingest", status=422, body=b'{"error": "field n must be a string"}', headers=JSON)
    result = write(sink(api, max_batch_records=10), RECORDS)
    assert result.written == 15 and len(result.dead_letters) == 10
    dead = result.dead_letters[0]
    assert dead.record == RECORDS[0] and dead.context["status"] == 422 and dead.attempts == 1
    assert "field n must be a string" in dead.reason and dead.context["excerpt"].startswith('{"error"')
    assert dead.context["idempotency_key"].endswith("/p/0/0")


def test_per_item_results_dead_letter_refused_items_and_retry_throttled_ones(api: Any) -> None:
    sent: list[list[int]] = []

    def bulk(seen: Any) -> tuple[int, dict[str, str], bytes]:
        records = json.loads(seen.body)
        sent.append([r["n"] for r in records])
        first = len(sent) == 1
        results = [{"status": 400, "error": "bad n"} if r["n"] == 2 else
                   {"status": 429} if r["n"] == 3 and first else {"status": 201} for r in records]
        return 200, JSON, json.dumps({"results": results}).encode()

    api.route("/bulk", bulk)
    ctx = make_context()
    s = build("sink", {"type": "http", "url": api.url + "/bulk", "retry": FAST_RETRY,
                       "item_results": {"path": "results"}}, ctx)
    result = s.write(Batch([dict(r) for r in RECORDS[:5]], "p", 0))
    s.close()
    assert sent == [[0, 1, 2, 3, 4], [3]], "only the throttled item is sent again"
    assert result.written == 4 and [d.record["n"] for d in result.dead_letters] == [2]
    dead = result.dead_letters[0]
    assert dead.context["status"] == 400 and dead.context["error"] == "bad n" and dead.error_type == "ItemRefused"
    keys = [h.headers["idempotency-key"] for h in api.hits("/bulk")]
    assert keys[1] == keys[0] + "/retry-1" and ctx.metrics.retries == 1


def test_items_throttled_on_every_round_fail_the_partition_after_the_policy(api: Any) -> None:
    api.route("/bulk", lambda seen: (200, JSON, json.dumps([{"status": 503} for _ in json.loads(seen.body)]).encode()))
    with pytest.raises(Exception, match=r"1 item\(s\) .* answered 429/5xx, still after 3 round"):
        write({"type": "http", "url": api.url + "/bulk", "item_results": {},
               "retry": {"attempts": 3, "initial_backoff_s": 0.01}}, RECORDS[:1])
    assert len(api.hits("/bulk")) == 3


def test_item_results_that_do_not_match_the_records_sent_fail(api: Any) -> None:
    api.route("/bulk", lambda seen: (200, JSON, b'{"results": [{"status": 200}]}'))
    with pytest.raises(Exception, match="1 results for 3 records"):
        write({"type": "http", "url": api.url + "/bulk", "item_results": {"path": "results"}}, RECORDS[:3])


def test_a_batch_still_failing_after_the_retries_fails_the_partition(api: Any, tmp_path: Path) -> None:
    api.add("/ingest", status=503, times=100)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    summary = run_job({"job_name": "push", "runtime": {"retry": FAST_RETRY},
                       "source": {"type": "jsonl", "path": str(tmp_path / "in.jsonl")},
                       "destination": sink(api, retry={"attempts": 2, "initial_backoff_s": 0.01})})
    assert summary.status == "failed"
    assert any("HTTP 503" in f.error and "gave up after 2 attempt" in f.error for f in summary.failures)
    assert len(api.hits("/ingest")) == 2, "the client retried; the engine did not multiply the attempts"


def test_running_again_sends_the_same_keys(api: Any, store: Store, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    spec = {"job_name": "push", "runtime": {"batch_size": 10, "retry": FAST_RETRY},
            "source": {"type": "jsonl", "path": str(tmp_path / "in.jsonl")},
            "destination": sink(api, max_batch_records=5),
            "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")}}
    assert run_job(spec).status == "succeeded"
    first = [h.headers["idempotency-key"] for h in api.hits("/ingest")]
    assert run_job(spec).status == "succeeded"
    again = [h.headers["idempotency-key"] for h in api.hits("/ingest")][len(first):]
    assert again == first and len(first) == 5
    assert store.records() == RECORDS, "the API saw the same keys and kept one copy"


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="only in mode: record"):
        build("sink", {"type": "http", "url": "http://x/{{ record.id }}"})
    with pytest.raises(ConfigError, match="envelope applies to mode json_array"):
        build("sink", {"type": "http", "url": "http://x", "mode": "ndjson", "envelope": "items"})


class TestHttpSinkContract(SinkContract):
    """Written by idempotency key: commit cannot know which partition sent what, so it prunes nothing."""

    prunes_partitions = False

    @pytest.fixture
    def sink_block(self, api: Any, store: Store) -> dict[str, Any]:
        return sink(api, max_batch_records=4)

    @pytest.fixture
    def read_back(self, store: Store) -> Any:
        return store.records
