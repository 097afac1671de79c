"""http_enrich against a real local HTTP server: pooling, rate limits across threads, in-flight
bounds, retries (Retry-After, 5xx, timeouts), caching, failure policies and secrets."""

from __future__ import annotations

import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from sluice import Batch, ConfigError
from sluice.testing import build, make_context, read_jsonl, run_job
from sluice_http.errors import parse_retry_after
from sluice_http.ratelimit import Cancelled, RateLimiter

FAST_RETRY = {"attempts": 4, "initial_backoff_s": 0.01, "max_backoff_s": 0.05}


def enrich(api: Any, **options: Any) -> dict[str, Any]:
    block = {"type": "http_enrich", "url": api.url + "/users/{{ record.uid }}", "into": "profile",
             "retry": FAST_RETRY}
    block.update(options)
    return block


def apply(step: Any, records: list[dict[str, Any]], partition: str = "p") -> Batch:
    return step.apply(Batch([dict(r) for r in records], partition, 0))


def test_enriches_records_into_a_field_and_with_jmespath_select(api: Any) -> None:
    step = build("transform", enrich(api, select={"geo.country": "country", "tier": "tier.name"}))
    out = apply(step, [{"uid": "1"}, {"uid": "2"}])
    step.close()
    assert out.records == [
        {"uid": "1", "profile": {"id": "1", "country": "C1", "tier": {"name": "gold"}}, "geo": {"country": "C1"},
         "tier": "gold"},
        {"uid": "2", "profile": {"id": "2", "country": "C2", "tier": {"name": "basic"}}, "geo": {"country": "C2"},
         "tier": "basic"},
    ]


def test_templated_method_params_headers_and_json_body(api: Any) -> None:
    step = build("transform", {
        "type": "http_enrich", "url": api.url + "/echo/{{ record.uid }}", "method": "{{ record.verb }}",
        "params": {"day": "{{ ds }}", "q": "{{ record.uid }}"}, "headers": {"x-key": "k-{{ record.uid }}"},
        "json": {"user": "{{ record.uid }}", "fixed": 1, "list": ["{{ run_id }}"]}, "into": "echo"})
    ctx_run_id = step.ctx.run_id
    out = apply(step, [{"uid": "7", "verb": "post"}])
    step.close()
    echo = out.records[0]["echo"]
    assert echo["method"] == "POST" and echo["path"] == "/echo/7"
    assert echo["query"] == {"day": "2024-01-01", "q": "7"} and echo["x_key"] == "k-7"
    assert echo["body"] == f'{{"user":"7","fixed":1,"list":["{ctx_run_id}"]}}'


def test_basic_auth_and_a_raw_body_template(api: Any) -> None:
    import base64

    step = build("transform", {"type": "http_enrich", "url": api.url + "/echo", "method": "PUT",
                               "body": "name={{ record.name }}", "into": "echo",
                               "auth": {"type": "basic", "username": "etl", "password": "pw-123"}})
    out = apply(step, [{"name": "ann"}])
    step.close()
    assert out.records[0]["echo"]["body"] == "name=ann" and out.records[0]["echo"]["method"] == "PUT"
    assert api.hits()[0].headers["authorization"] == "Basic " + base64.b64encode(b"etl:pw-123").decode()


def test_connections_are_pooled_and_kept_alive(api: Any) -> None:
    step = build("transform", enrich(api, max_in_flight=4))
    for i in range(3):
        apply(step, [{"uid": str(n)} for n in range(i * 20, i * 20 + 20)])
    step.close()
    hits = api.hits("/users/")
    assert len(hits) == 60
    ports = {h.port for h in hits}
    assert len(ports) <= 4, f"at most max_in_flight connections, saw {len(ports)}"


def test_rate_limit_holds_across_threads(api: Any) -> None:
    rate, per_thread, threads = 25.0, 8, 4
    step = build("transform", enrich(api, url=api.url + "/{{ record.path }}", rate_per_sec=rate, max_in_flight=8))
    # open all 8 pooled connections first (slow requests overlap), so no measured request pays a TCP connect
    apply(step, [{"path": "slow/warm?s=0.3"} for _ in range(8)])
    assert len({h.port for h in api.hits("/slow/")}) == 8

    def work(t: int) -> None:
        apply(step, [{"path": f"users/{t}-{i}"} for i in range(per_thread)], partition=f"p{t}")

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    step.close()
    times = sorted(h.at for h in api.hits("/users/"))
    n = per_thread * threads
    assert len(times) == n
    # measured where it matters, at the server: N requests at rate R span at least (N-1)/R
    # (30 ms of slack for thread scheduling jitter between a request's send and its arrival on a busy box)
    assert times[-1] - times[0] >= (n - 1) / rate - 0.03
    # and no burst anywhere: any R+1 consecutive arrivals span about a second
    window = int(rate)
    assert min(times[i + window] - times[i] for i in range(n - window)) >= window / rate - 0.03


def test_rate_defaults_to_runtime_api_rate_per_sec(api: Any) -> None:
    step = build("transform", enrich(api, max_in_flight=1), make_context(api_rate_per_sec=20))
    apply(step, [{"uid": "warm"}])  # one kept-alive connection from here on: arrivals track send times
    apply(step, [{"uid": str(i)} for i in range(6)])
    step.close()
    times = sorted(h.at for h in api.hits(r"/users/\d"))
    assert len(times) == 6 and times[-1] - times[0] >= 5 / 20 - 0.03


def test_max_in_flight_bounds_concurrent_requests_across_threads(api: Any) -> None:
    step = build("transform", {"type": "http_enrich", "url": api.url + "/slow/{{ record.i }}?s=0.1",
                               "into": "r", "max_in_flight": 3})
    workers = [threading.Thread(target=apply, args=(step, [{"i": i} for i in range(6)], f"p{t}")) for t in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    step.close()
    assert len(api.hits("/slow/")) == 18
    assert api.max_active == 3


def test_requests_of_one_batch_run_concurrently(api: Any) -> None:
    step = build("transform", {"type": "http_enrich", "url": api.url + "/slow/{{ record.i }}?s=0.2",
                               "into": "r", "max_in_flight": 4})
    started = time.monotonic()
    out = apply(step, [{"i": i} for i in range(8)])
    elapsed = time.monotonic() - started
    step.close()
    assert [r["i"] for r in out.records] == list(range(8)), "order is kept"
    assert api.max_active == 4
    assert elapsed < 8 * 0.2 * 0.75, "8 requests of 0.2 s with 4 at a time take about 0.4 s, not 1.6 s"


def test_retry_after_is_honoured_and_retries_counted(api: Any) -> None:
    api.add(r"/users/1$", status=429, headers={"Retry-After": "1"})
    ctx = make_context()
    step = build("transform", enrich(api), ctx)
    out = apply(step, [{"uid": "1"}])
    step.close()
    first, second = api.hits(r"/users/1$")
    assert second.at - first.at >= 0.98, "the retry waits for Retry-After, not the 10 ms backoff"
    assert out.records[0]["profile"]["id"] == "1"
    assert ctx.metrics.retries == 1


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(formatdate(1_000_010, usegmt=True), now=1_000_000) == pytest.approx(10, abs=1)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_5xx_are_retried_with_backoff(api: Any) -> None:
    api.add(r"/users/5$", status=503, times=2)
    ctx = make_context()
    step = build("transform", enrich(api), ctx)
    out = apply(step, [{"uid": "5"}, {"uid": "6"}])
    step.close()
    assert len(api.hits(r"/users/5$")) == 3
    assert [r["profile"]["id"] for r in out.records] == ["5", "6"]
    assert ctx.metrics.retries == 2


def test_cache_sends_one_request_per_distinct_key(api: Any) -> None:
    ctx = make_context()
    step = build("transform", enrich(api, cache={"ttl_s": 60, "max_entries": 100}, max_in_flight=8), ctx)
    records = [{"uid": str(i % 4), "n": i} for i in range(40)]
    out = apply(step, records[:20])
    out2 = apply(step, records[20:])
    step.close()
    assert sorted(h.path for h in api.hits("/users/")) == ["/users/0", "/users/1", "/users/2", "/users/3"]
    assert all(r["profile"]["id"] == r["uid"] for r in out.records + out2.records)
    assert ctx.metrics.counters["http_enrich.cache_misses"] == 4
    assert ctx.metrics.counters["http_enrich.cache_hits"] == 36
    out.records[0]["profile"]["id"] = "changed"
    assert out2.records[0]["profile"]["id"] == "0", "records sharing a cached response get their own copy"


def test_timeouts_are_retried_then_dead_lettered(api: Any) -> None:
    step = build("transform", {"type": "http_enrich", "url": api.url + "/slow/x?s=1.0", "into": "r",
                               "timeout": {"connect": 1, "read": 0.2, "total": 1},
                               "retry": {**FAST_RETRY, "attempts": 2}})
    out = apply(step, [{"a": 1}])
    step.close()
    assert out.records == []
    dead = out.dead_letters[0]
    assert "timeout" in dead.reason.lower() and dead.context["attempts"] == 2
    assert len(api.hits("/slow/")) == 2


def test_total_timeout_bounds_an_attempt_even_with_a_longer_read_timeout(api: Any) -> None:
    step = build("transform", {"type": "http_enrich", "url": api.url + "/slow/x?s=1.0", "into": "r",
                               "timeout": {"read": 5, "total": 0.3}, "retry": {**FAST_RETRY, "attempts": 1}})
    started = time.monotonic()
    out = apply(step, [{"a": 1}])
    step.close()
    assert time.monotonic() - started < 0.9
    assert "timeout" in out.dead_letters[0].reason.lower()


def test_permanent_4xx_is_dead_lettered_without_retry(api: Any) -> None:
    api.add(r"/users/404$", status=404, body=b"no such user")
    ctx = make_context()
    step = build("transform", enrich(api), ctx)
    out = apply(step, [{"uid": "404"}, {"uid": "1"}])
    step.close()
    assert [r["uid"] for r in out.records] == ["1"]
    dead = out.dead_letters[0]
    assert dead.record == {"uid": "404"}
    assert dead.context["status"] == 404 and dead.error_type == "HttpPermanent"
    assert "404" in dead.reason and "no such user" in dead.reason and "/users/404" in dead.reason
    assert len(api.hits(r"/users/404$")) == 1 and ctx.metrics.retries == 0


def test_on_error_keep_passes_the_record_unchanged(api: Any) -> None:
    api.add(r"/users/9$", status=400)
    step = build("transform", enrich(api, on_error="keep"))
    out = apply(step, [{"uid": "9"}])
    step.close()
    assert out.records == [{"uid": "9"}] and out.dead_letters == []


def test_when_skips_records(api: Any) -> None:
    step = build("transform", enrich(api, when="record.uid != 'skip'"))
    out = apply(step, [{"uid": "skip"}, {"uid": "3"}])
    step.close()
    assert out.records[0] == {"uid": "skip"} and out.records[1]["profile"]["id"] == "3"
    assert [h.path for h in api.hits()] == ["/users/3"]


def test_text_responses_are_kept_as_text(api: Any) -> None:
    step = build("transform", {"type": "http_enrich", "url": api.url + "/text", "into": "t"})
    assert apply(step, [{}]).records == [{"t": "plain words"}]
    step.close()


def test_rate_limiter_wait_stops_when_the_run_stops() -> None:
    limiter = RateLimiter(0.2)
    stop = threading.Event()
    limiter.acquire(stop)
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        limiter.acquire(stop)
    assert time.monotonic() - started < 1


def test_config_needs_a_mapping_and_a_valid_jmespath(api: Any) -> None:
    with pytest.raises(ConfigError, match="'into'"):
        build("transform", {"type": "http_enrich", "url": api.url})
    with pytest.raises(ConfigError, match="invalid JMESPath"):
        build("transform", {"type": "http_enrich", "url": api.url, "select": {"a": "b[["}})


# -- through the engine -----------------------------------------------------------------------------
def write_input(path: Path, n: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    lines = [f'{{"uid": "{i % 5}", "n": {i}}}' for i in range(n)]
    (path / "part-a.jsonl").write_text("\n".join(lines[: n // 2]) + "\n")
    (path / "part-b.jsonl").write_text("\n".join(lines[n // 2:]) + "\n")


def job(api: Any, tmp_path: Path, **step: Any) -> dict[str, Any]:
    return {
        "job_name": "enrich", "runtime": {"batch_size": 10, "max_workers": 2, "error_rate_threshold": 0.5,
                                          "retry": FAST_RETRY},
        "source": {"type": "jsonl", "path": str(tmp_path / "in")},
        "transform": {"steps": [{"type": "http_enrich", "url": api.url + "/users/{{ record.uid }}",
                                 "into": "profile", **step}]},
        "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
    }


def test_run_job_with_secrets_cache_and_dead_letters(api: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_TOKEN", "tok-s3cr3t-value")
    api.add(r"/users/4$", status=404, times=100)
    write_input(tmp_path / "in", 60)
    summary = run_job(job(api, tmp_path, auth={"type": "bearer", "token": "{{ secret('ENRICH_TOKEN') }}"},
                          headers={"x-key": "{{ secret('ENRICH_TOKEN') }}"}, cache={"ttl_s": 60}))
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled
    assert summary.read == 60
    assert summary.dead_lettered == {"steps[0]:http_enrich": 12}, "every uid-4 record is dead-lettered"
    assert summary.written == 48
    assert summary.counters["http_enrich.cache_misses"] == 4
    assert summary.counters["http_enrich.cache_hits"] == 44
    assert summary.counters["http_enrich.failures"] == 12
    assert sorted(h.path for h in api.hits("/users/[0-3]")) == [f"/users/{i}" for i in range(4)]
    assert {h.headers["authorization"] for h in api.hits()} == {"Bearer tok-s3cr3t-value"}
    assert {h.headers["x-key"] for h in api.hits()} == {"tok-s3cr3t-value"}
    from sluice import secrets

    assert secrets.mask("header tok-s3cr3t-value") == "header ***", "secrets used by templates are masked in logs"
    written = read_jsonl(tmp_path / "out")
    assert all(r["profile"]["id"] == r["uid"] for r in written)
    dead = read_jsonl(tmp_path / "dead")
    assert dead[0]["record"]["uid"] == "4" and dead[0]["context"]["status"] == 404
    assert dead[0]["stage"] == "transform" and dead[0]["plugin"] == "http_enrich"


def test_on_error_fail_fails_the_run(api: Any, tmp_path: Path) -> None:
    api.add(r"/users/3$", status=403, times=100)
    write_input(tmp_path / "in", 20)
    summary = run_job(job(api, tmp_path, on_error="fail"))
    assert summary.status == "failed"
    # which partition's error the summary quotes first is the engine's choice: look at all of them
    errors = [f.error for f in summary.failures]
    assert any("http_enrich" in e and "HTTP 403" in e and "on_error: fail" in e for e in errors), errors


def test_a_down_server_fails_with_the_host_and_never_the_secret(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("ENRICH_TOKEN", "tok-never-shown")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    class Down:
        url = f"http://127.0.0.1:{port}"

    write_input(tmp_path / "in", 4)
    block = job(Down, tmp_path, on_error="fail", retry={"attempts": 2, "initial_backoff_s": 0.01},
                params={"token": "{{ secret('ENRICH_TOKEN') }}"})
    summary = run_job(block)
    assert summary.status == "failed"
    # the partition that failed first names the host; the other one may only say it was stopped
    errors = [f.error for f in summary.failures]
    assert any(f"127.0.0.1:{port}" in e and "connection failed" in e for e in errors), errors
    assert not any("tok-never-shown" in e for e in [*errors, summary.error])
    assert "token=***" in " ".join(errors)
