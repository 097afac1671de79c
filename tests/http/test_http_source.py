"""The HTTP source against a real local API: every pagination style, body formats, partitions,
auth schemes, faults (429 storms, 5xx bursts, slow and malformed pages, token expiry), rate limits
across partitions and resume mid-pagination."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from sluice import ConfigError
from sluice.testing import build, make_context, read_jsonl, run_job
from sluice_http.paging import next_link

FAST_RETRY = {"attempts": 4, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}
JSON = {"content-type": "application/json"}
ITEMS = [{"n": i, "name": f"item {i}"} for i in range(45)]


def ok(payload: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return 200, {**JSON, **(headers or {})}, json.dumps(payload).encode()


def items_for(seen: Any) -> list[dict[str, Any]]:
    """The dataset of the partition a request names (``account``), else ITEMS."""
    account = seen.query.get("account")
    return [{**r, "account": account} for r in ITEMS] if account else ITEMS


def by_page(seen: Any) -> tuple[int, dict[str, str], bytes]:
    page, size = int(seen.query.get("page", 1)), int(seen.query.get("per_page", 10))
    data = items_for(seen)
    return ok({"data": {"items": data[(page - 1) * size: page * size]}})


def by_offset(seen: Any) -> tuple[int, dict[str, str], bytes]:
    offset, limit = int(seen.query["offset"]), int(seen.query["limit"])
    return ok(ITEMS[:40][offset: offset + limit])


def by_cursor(seen: Any) -> tuple[int, dict[str, str], bytes]:
    start = int(seen.query.get("cursor", "c0")[1:])
    nxt = f"c{start + 10}" if start + 10 < len(ITEMS) else None
    return ok({"items": ITEMS[start: start + 10], "meta": {"next_cursor": nxt}})


def by_link(seen: Any) -> tuple[int, dict[str, str], bytes]:
    page = int(seen.query.get("page", 1))
    headers = {}
    if page * 10 < len(ITEMS):
        headers["link"] = f'<{seen.path}?page={page + 1}>; rel="next", </link?page=1>; rel="first"'
    return ok(ITEMS[(page - 1) * 10: page * 10], headers)


def by_next_url(seen: Any) -> tuple[int, dict[str, str], bytes]:
    after = int(seen.query.get("after", 0))
    nxt = f"/next?{urlencode({'after': after + 10})}" if after + 10 < len(ITEMS) else None
    return ok({"results": ITEMS[after: after + 10], "links": {"next": nxt}})


def source(api: Any, path: str, **options: Any) -> dict[str, Any]:
    return {"type": "http", "url": api.url + path, "retry": FAST_RETRY, **options}


def read_all(block: dict[str, Any], ctx: Any = None, batch_size: int = 7) -> tuple[list[Any], list[Any], Any]:
    """Every record, every dead letter, and the last checkpoint, over all partitions."""
    src = build("source", block, ctx or make_context(batch_size=batch_size))
    records, dead, checkpoint = [], [], None
    try:
        for p in src.partitions():
            for batch in src.read(p):
                records += batch.records
                dead += batch.dead_letters
                checkpoint = batch.checkpoint
    finally:
        src.close()
    return records, dead, checkpoint


# -- pagination styles --------------------------------------------------------------------------
def test_page_numbers_read_every_page_in_order_and_stop_at_a_short_page(api: Any) -> None:
    api.route("/items", by_page)
    records, dead, checkpoint = read_all(source(api, "/items", records="data.items",
                                                pagination={"type": "page", "size_param": "per_page", "size": 10}))
    assert records == ITEMS and dead == []
    assert [h.query for h in api.hits("/items")] == [{"page": str(p), "per_page": "10"} for p in range(1, 6)]
    assert checkpoint["done"] is True


def test_offset_and_limit_stop_at_an_empty_page(api: Any) -> None:
    api.route("/offset", by_offset)
    records, _, _ = read_all(source(api, "/offset", pagination={"type": "offset", "size": 10}))
    assert records == ITEMS[:40]
    assert [h.query["offset"] for h in api.hits("/offset")] == ["0", "10", "20", "30", "40"]
    assert {h.query["limit"] for h in api.hits("/offset")} == {"10"}


def test_a_cursor_from_the_body_until_there_is_none(api: Any) -> None:
    api.route("/cursor", by_cursor)
    records, _, _ = read_all(source(api, "/cursor", records="items",
                                    pagination={"type": "cursor", "next": "meta.next_cursor"}))
    assert records == ITEMS
    assert [h.query.get("cursor") for h in api.hits("/cursor")] == [None, "c10", "c20", "c30", "c40"]


def test_the_link_header_rel_next(api: Any) -> None:
    api.route("/link", by_link)
    records, _, _ = read_all(source(api, "/link", pagination={"type": "link_header"}))
    assert records == ITEMS
    assert [h.query.get("page") for h in api.hits("/link")] == [None, "2", "3", "4", "5"]


def test_a_relative_next_url_in_the_body(api: Any) -> None:
    api.route("/next", by_next_url)
    records, _, _ = read_all(source(api, "/next", records="results",
                                    pagination={"type": "next_url", "next": "links.next"}))
    assert records == ITEMS and len(api.hits("/next")) == 5


def test_link_header_parsing() -> None:
    assert next_link('<https://a/x?page=2>; rel="next", <https://a/x?page=9>; rel="last"') == "https://a/x?page=2"
    assert next_link('<https://a/x?page=1>; rel="prev first"') is None
    assert next_link("<https://a/y>; rel=next") == "https://a/y"
    assert next_link(None) is None


def test_a_total_in_the_body_and_max_pages_stop_pagination(api: Any) -> None:
    api.route("/total", lambda seen: ok({"items": ITEMS[:10], "total": 25}))  # never a short page
    records, _, _ = read_all(source(api, "/total", records="items",
                                    pagination={"type": "page", "total": "total"}))
    assert len(records) == 30 and len(api.hits("/total")) == 3, "stops once 25 records were read"
    records, _, _ = read_all(source(api, "/total", records="items", pagination={"type": "page", "max_pages": 2}))
    assert len(records) == 20 and len(api.hits("/total")) == 5


def test_one_request_without_pagination(api: Any) -> None:
    api.route("/all", lambda seen: ok(ITEMS))
    records, _, checkpoint = read_all(source(api, "/all"))
    assert records == ITEMS and len(api.hits("/all")) == 1 and checkpoint["done"]


def test_params_may_travel_in_the_json_body(api: Any) -> None:
    def search(seen: Any) -> tuple[int, dict[str, str], bytes]:
        query = json.loads(seen.body)
        assert query["filter"] == "x"
        return ok({"hits": ITEMS[(query["page"] - 1) * 20: query["page"] * 20]})

    api.route("/search", search)
    records, _, _ = read_all(source(api, "/search", method="POST", json={"filter": "x"}, records="hits",
                                    pagination={"type": "page", "param_in": "json", "size": 20,
                                                "size_param": "size"}))
    assert records == ITEMS
    assert [json.loads(h.body) for h in api.hits("/search")] == [
        {"filter": "x", "page": p, "size": 20} for p in (1, 2, 3)]


# -- body formats -------------------------------------------------------------------------------
def test_json_lines_and_csv_bodies(api: Any) -> None:
    lines = b"\n".join(json.dumps(r).encode() for r in ITEMS[:3]) + b"\nnot json\n[1]\n"
    api.route("/lines", lambda seen: (200, {"content-type": "application/x-ndjson"}, lines))
    records, dead, _ = read_all(source(api, "/lines"))
    assert records == ITEMS[:3]
    assert [d.context["item"] for d in dead] == [4, 5] and "line 4 is not valid JSON" in dead[0].reason
    assert dead[1].record == [1] and dead[0].error_type == "MalformedRecord"

    out = io.StringIO()
    writer = csv.DictWriter(out, ["n", "name"], delimiter=";")
    writer.writeheader()
    writer.writerows(ITEMS[:4])
    api.route("/csv", lambda seen: (200, {"content-type": "text/plain"}, out.getvalue().encode()))
    records, _, _ = read_all(source(api, "/csv", format="csv", csv_delimiter=";"))
    assert records == [{"n": str(r["n"]), "name": r["name"]} for r in ITEMS[:4]]


def test_items_that_are_not_objects_are_dead_letters_in_place(api: Any) -> None:
    api.route("/mixed", lambda seen: ok([{"a": 1}, 7, {"a": 2}]))
    records, dead, _ = read_all(source(api, "/mixed"))
    assert records == [{"a": 1}, {"a": 2}] and dead[0].record == 7 and dead[0].context["item"] == 1


def test_config_rejects_body_paths_on_line_formats_and_cursor_without_next() -> None:
    with pytest.raises(ConfigError, match="need format json"):
        build("source", {"type": "http", "url": "http://x", "format": "jsonl", "records": "a"})
    with pytest.raises(ConfigError, match="needs 'next'"):
        build("source", {"type": "http", "url": "http://x", "pagination": {"type": "cursor"}})
    with pytest.raises(ConfigError, match="shorter than a second"):
        build("source", {"type": "http", "url": "http://x", "partitions": {"chunk": "0.5s"}})
    with pytest.raises(ConfigError, match="values repeat"):
        build("source", {"type": "http", "url": "http://x", "partitions": {"values": ["a", "b", "a"]}})


# -- partitions ---------------------------------------------------------------------------------
def test_partitions_from_values_and_interval_chunks_render_into_the_request(api: Any) -> None:
    api.route("/acct", lambda seen: ok([{"path": seen.path, **seen.query}]))
    block = source(api, "/acct/{{ partition.value }}", params={"since": "{{ partition.start }}",
                                                               "until": "{{ partition.end }}", "day": "{{ ds }}"},
                   partitions={"values": "acme, globex", "chunk": "12h"})
    src = build("source", block)
    keys = [p.key for p in src.partitions()]
    src.close()
    assert keys == ["acme-20240101T000000", "acme-20240101T120000", "globex-20240101T000000",
                    "globex-20240101T120000"]
    records, _, _ = read_all(block)
    assert records[1] == {"path": "/acct/acme", "since": "2024-01-01T12:00:00+00:00",
                          "until": "2024-01-02T00:00:00+00:00", "day": "2024-01-01"}
    assert [r["path"] for r in records] == ["/acct/acme"] * 2 + ["/acct/globex"] * 2


# -- auth ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("auth", "header", "value", "query"), [
    ({"type": "bearer", "token": "tok-123"}, "authorization", "Bearer tok-123", {}),
    ({"type": "basic", "username": "etl", "password": "pw-123"}, "authorization",
     "Basic " + base64.b64encode(b"etl:pw-123").decode(), {}),
    ({"type": "api_key", "key": "key-123"}, "x-api-key", "key-123", {}),
    ({"type": "api_key", "key": "key-123", "name": "X-Token"}, "x-token", "key-123", {}),
    ({"type": "api_key", "key": "key-123", "in": "query", "name": "apikey"}, None, None, {"apikey": "key-123"}),
], ids=["bearer", "basic", "api_key-header", "api_key-named-header", "api_key-query"])
def test_auth_schemes(api: Any, auth: dict[str, Any], header: str | None, value: str | None,
                      query: dict[str, str]) -> None:
    api.route("/items", by_page)
    records, _, _ = read_all(source(api, "/items", auth=auth, records="data.items",
                                    pagination={"type": "page", "size_param": "per_page", "size": 20}))
    assert len(records) == 45
    for hit in api.hits("/items"):
        if header:
            assert hit.headers[header] == value
        assert {k: hit.query[k] for k in query} == query


def token_server(api: Any, lifetime: float) -> dict[str, Any]:
    """An OAuth2 token endpoint (client credentials) and a /data API that refuses expired tokens."""
    issued: dict[str, float] = {}
    state = {"n": 0, "refused": 0}

    def token(seen: Any) -> tuple[int, dict[str, str], bytes]:
        assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"cid:csecret-1").decode()
        assert "grant_type=client_credentials" in seen.body.decode()
        state["n"] += 1
        value = f"access-{state['n']}"
        issued[value] = time.monotonic()
        return ok({"access_token": value, "token_type": "bearer", "expires_in": lifetime})

    def data(seen: Any) -> tuple[int, dict[str, str], bytes]:
        value = seen.headers.get("authorization", "").removeprefix("Bearer ")
        if value not in issued or time.monotonic() - issued[value] > lifetime or value in state.get("revoked", ()):
            state["refused"] += 1
            return 401, JSON, b'{"error": "invalid_token"}'
        return by_page(seen)

    api.route("/oauth/token", token)
    api.route("/data", data)
    return state


def oauth_block(api: Any, **extra: Any) -> dict[str, Any]:
    return source(api, "/data", records="data.items", pagination={"type": "page", "size_param": "per_page",
                                                                   "size": 5},
                  auth={"type": "oauth2", "token_url": api.url + "/oauth/token", "client_id": "cid",
                        "client_secret": "csecret-1", **extra})


def test_oauth2_tokens_are_refreshed_before_they_expire(api: Any) -> None:
    state = token_server(api, lifetime=0.6)
    records, _, _ = read_all(oauth_block(api, refresh_before_s=0.2), make_context(batch_size=7, api_rate_per_sec=8))
    assert len(records) == 45  # 10 pages at 8/s: about 1.2 s, two lifetimes
    assert state["refused"] == 0, "a token is replaced before the API would refuse it"
    assert state["n"] >= 3


def test_an_oauth2_token_refused_early_is_fetched_again_once(api: Any) -> None:
    state = token_server(api, lifetime=3600)
    state["revoked"] = {"access-1"}
    records, _, _ = read_all(oauth_block(api))
    assert len(records) == 45 and state["n"] == 2 and state["refused"] == 1


def test_an_oauth2_token_endpoint_that_refuses_fails_with_its_status(api: Any) -> None:
    api.route("/oauth/token", lambda seen: (401, JSON, b'{"error": "invalid_client"}'))
    with pytest.raises(Exception, match=r"oauth2 token request.*HTTP 401.*invalid_client") as info:
        read_all(oauth_block(api))
    assert "csecret-1" not in str(info.value)


# -- faults -------------------------------------------------------------------------------------
def test_a_429_storm_waits_for_retry_after_every_time(api: Any) -> None:
    api.route("/items", by_page)
    api.add(r"/items", status=429, times=3, headers={"Retry-After": "0.3"})
    ctx = make_context(batch_size=50)
    records, _, _ = read_all(source(api, "/items", records="data.items", retry={**FAST_RETRY, "attempts": 5},
                                    pagination={"type": "page", "size_param": "per_page", "size": 10}), ctx)
    assert records == ITEMS
    first = [h.at for h in api.hits("/items")][:4]
    assert all(b - a >= 0.29 for a, b in itertools.pairwise(first)), "each retry waits for Retry-After"
    assert ctx.metrics.retries == 3


def test_a_5xx_burst_is_retried_and_then_gives_up_naming_the_page(api: Any) -> None:
    api.route("/items", by_page)
    api.add(r"/items", status=502, times=2)
    records, _, _ = read_all(source(api, "/items", records="data.items",
                                    pagination={"type": "page", "size_param": "per_page", "size": 10}))
    assert records == ITEMS
    api.add(r"/items", status=503, times=100)
    with pytest.raises(Exception, match=r"partition 'all', page 1 .*/items\?page=1.*HTTP 503.*after 4 attempt"):
        read_all(source(api, "/items", records="data.items", pagination={"type": "page", "size": 10}))


def test_a_slow_page_times_out_and_is_retried(api: Any) -> None:
    api.route("/items", by_page)
    api.add(r"/items", status=200, delay_s=0.6, body=b"[]", headers=JSON)  # one page that hangs
    started = time.monotonic()
    records, _, _ = read_all(source(api, "/items", records="data.items", timeout={"read": 0.2},
                                    pagination={"type": "page", "size_param": "per_page", "size": 10}))
    assert records == ITEMS and time.monotonic() - started < 3
    assert len(api.hits("/items")) == 6, "the slow attempt, then the five pages"


def test_a_malformed_page_is_a_dead_letter_and_page_pagination_goes_on(api: Any, tmp_path: Path,
                                                                          monkeypatch: Any) -> None:
    monkeypatch.setenv("API_KEY", "k-very-secret")
    api.route("/items", by_page)
    api.add(r"/items", status=200, body=b"<html>oops</html>", headers=JSON)
    block = source(api, "/items", records="data.items", params={"token": "{{ secret('API_KEY') }}"},
                   pagination={"type": "page", "size_param": "per_page", "size": 10})
    summary = run_job(job(api, tmp_path, block, error_rate_threshold=0.5))
    assert summary.status == "succeeded", summary.error
    assert summary.written == 35 and summary.dead_lettered == {"source": 1} and summary.reconciled
    assert [r["n"] for r in read_jsonl(tmp_path / "out")] == list(range(10, 45)), "pages 2-5 are read"
    (letter,) = read_jsonl(tmp_path / "dead")
    assert letter["error_type"] == "MalformedPage" and letter["context"]["status"] == 200
    assert letter["context"]["excerpt"] == "<html>oops</html>" and letter["context"]["page"] == 1
    assert "token=***" in letter["context"]["url"] and "not valid JSON" in letter["reason"]
    assert "k-very-secret" not in json.dumps(letter)
    assert {h.query["token"] for h in api.hits("/items")} == {"k-very-secret"}


def test_a_malformed_page_fails_a_cursor_partition_naming_the_page(api: Any) -> None:
    api.route("/cursor", by_cursor)
    api.add(r"/cursor", status=200, body=b'{"unexpected": true}', headers=JSON)
    with pytest.raises(Exception, match=r"page 1 .*/cursor.*has no 'items'.*next page is unknown"):
        read_all(source(api, "/cursor", records="items", pagination={"type": "cursor", "next": "meta.next_cursor"}))


def test_a_malformed_page_with_a_link_header_is_skipped_by_the_header(api: Any) -> None:
    api.route("/link", by_link)
    api.add(r"/link", status=200, body=b"oops", headers={**JSON, "link": '</link?page=2>; rel="next"'})
    records, dead, _ = read_all(source(api, "/link", pagination={"type": "link_header"}))
    assert records == ITEMS[10:] and [d.context["page"] for d in dead] == [1]


def test_too_many_malformed_pages_in_a_row_fail_the_partition(api: Any) -> None:
    api.route("/items", lambda seen: (200, JSON, b"nope"))
    with pytest.raises(Exception, match=r"page 3 .*3 malformed pages in a row"):
        read_all(source(api, "/items", max_malformed_pages=2, pagination={"type": "page"}))


# -- through the engine -------------------------------------------------------------------------
def job(api: Any, tmp_path: Path, source_block: dict[str, Any], **runtime: Any) -> dict[str, Any]:
    return {"job_name": "api", "runtime": {"batch_size": 10, "max_workers": 4, "retry": FAST_RETRY, **runtime},
            "source": source_block,
            "destination": {"type": "jsonl", "path": str(tmp_path / "out"), "max_records_per_file": 10},
            "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
            "checkpoints": {"type": "local", "path": str(tmp_path / "cp")}}


def test_the_rate_limit_holds_across_partitions(api: Any, tmp_path: Path) -> None:
    api.route("/items", by_page)
    block = source(api, "/items", params={"account": "{{ partition.value }}"}, records="data.items",
                   partitions={"values": ["a", "b", "c", "d"]}, rate_per_sec=30, max_in_flight=4,
                   pagination={"type": "page", "size_param": "per_page", "size": 15})
    summary = run_job(job(api, tmp_path, block))
    assert summary.status == "succeeded", summary.error
    assert summary.read == 4 * 45 and summary.reconciled
    times = sorted(h.at for h in api.hits("/items"))
    assert len(times) == 4 * 4, "three full pages and an empty one per partition"
    assert times[-1] - times[0] >= (len(times) - 1) / 30 - 0.03, "4 partitions share one limiter"
    assert min(b - a for a, b in itertools.pairwise(times)) >= 1 / 30 - 0.015
    out = read_jsonl(tmp_path / "out")
    for account in "abcd":
        assert [r["n"] for r in out if r["account"] == account] == list(range(45)), "order within a partition"


def test_resume_mid_pagination_reads_no_finished_page_again(api: Any, tmp_path: Path) -> None:
    down = {"page": "4"}

    def flaky(seen: Any) -> tuple[int, dict[str, str], bytes]:
        if seen.query["page"] == down["page"]:
            return 503, JSON, b'{"error": "down"}'
        return by_page(seen)

    api.route("/items", flaky)
    block = source(api, "/items", records="data.items",
                   pagination={"type": "page", "size_param": "per_page", "size": 10})
    spec = job(api, tmp_path, block)
    first = run_job(spec)
    assert first.status == "failed" and "page 4" in " ".join(f.error for f in first.failures)
    assert first.written == 30
    pages_before = [h.query["page"] for h in api.hits("/items")]
    assert pages_before == ["1", "2", "3", "4", "4", "4", "4"]
    down["page"] = ""
    second = run_job(spec, resume=True)
    assert second.status == "succeeded", second.error
    pages_after = [h.query["page"] for h in api.hits("/items")][len(pages_before):]
    assert pages_after == ["4", "5"], "pages 1-3 were durable: never requested again"
    assert [r["n"] for r in read_jsonl(tmp_path / "out")] == list(range(45))


def test_resume_inside_a_page_skips_the_records_already_delivered(api: Any) -> None:
    api.route("/items", by_page)
    block = source(api, "/items", records="data.items", pagination={"type": "page", "size_param": "per_page",
                                                                     "size": 10})
    src = build("source", block, make_context(batch_size=4))
    (p,) = src.partitions()
    batches = list(src.read(p))
    assert batches[0].checkpoint == {"page": 1, "skip": 4}
    assert batches[2].checkpoint == {"number": 1, "page": 2, "skip": 2, "seen": 10}
    assert batches[-1].checkpoint == {"number": 5, "seen": 45, "done": True}
    rest = [r for b in src.read(p, batches[2].checkpoint) for r in b.records]
    src.close()
    assert rest == ITEMS[12:]


def test_concurrent_partitions_share_max_in_flight(api: Any) -> None:
    api.route("/slow", lambda seen: (time.sleep(0.1), ok([{"x": 1}]))[1])
    src = build("source", source(api, "/slow", partitions={"values": list(range(6))}, max_in_flight=2))
    threads = [threading.Thread(target=lambda p=p: list(src.read(p))) for p in src.partitions()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    src.close()
    assert len(api.hits("/slow")) == 6 and api.max_active == 2
