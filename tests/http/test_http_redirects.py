"""Secrets never follow a redirect to another origin, error answers keep the connection alive, and a
dead letter says what really happened (attempts made, the real status). For the source, the sink
and http_enrich alike: they share one client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sluice import Batch, secrets
from sluice.context import RunContext
from sluice.registry import get_registry
from sluice.settings import RuntimeConfig
from sluice.templating import Interval, Renderer, template_vars
from sluice.testing import build, read_jsonl, run_job

JSON = {"content-type": "application/json"}
SECRETS = {"API_KEY": "key-SECRET-123", "CUSTOM": "custom-SECRET-456", "TOKEN": "tok-SECRET-789"}
LEAKS = ("authorization", "x-api-key", "x-custom", "cookie")


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch) -> RunContext:
    """A run context whose secret() resolves (and masks) like a real run's."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    interval = Interval.for_day("2024-01-01")
    renderer = Renderer(template_vars("t", interval, "run-1"), secrets.resolver(get_registry()))
    return RunContext("t", "run-1", interval, RuntimeConfig(batch_size=50), renderer)


def landing(seen: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, JSON, json.dumps([{"landed": seen.path, "body": seen.body.decode()}]).encode()


def redirect_to(target: str, status: int = 307) -> Any:
    return lambda seen: (status, {"location": target}, b"moved")


def secret_options(**extra: Any) -> dict[str, Any]:
    return {"auth": {"type": "bearer", "token": SECRETS["TOKEN"]},
            "headers": {"X-Api-Key": SECRETS["API_KEY"], "X-Custom": "{{ secret('CUSTOM') }}", "Cookie": "s=1",
                        "X-Trace": "t-1"},
            "retry": {"attempts": 1}, **extra}


def call(kind: str, url: str, ctx: RunContext, **options: Any) -> Any:
    """One request through the source, the sink or http_enrich; returns what came back."""
    if kind == "source":
        src = build("source", {"type": "http", "url": url, **options}, ctx)
        try:
            return [r for b in src.read(src.partitions()[0]) for r in b.records]
        finally:
            src.close()
    if kind == "sink":
        sink = build("sink", {"type": "http", "url": url, **options}, ctx)
        try:
            return sink.write(Batch([{"n": 1}], "p", 0))
        finally:
            sink.close()
    step = build("transform", {"type": "http_enrich", "url": url, "into": "r", **options}, ctx)
    try:
        return step.apply(Batch([{"n": 1}], "p", 0))
    finally:
        step.close()


KINDS = ["source", "sink", "http_enrich"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_cross_origin_redirect_is_refused_by_default(kind: str, api: Any, make_api: Any, ctx: RunContext) -> None:
    other = make_api()
    other.route("/landing", landing)
    api.route("/redir", redirect_to(other.url + "/landing"))
    try:
        out = call(kind, api.url + "/redir", ctx, **secret_options())
    except Exception as exc:
        assert kind == "source"
        message = str(exc)
    else:
        assert kind != "source"
        dead = out.dead_letters[0]
        message = dead.reason
        assert dead.context["status"] == 307
    assert "redirect to another origin refused" in message and "same_origin" in message
    assert other.hits() == [], "nothing at all reaches the other origin"


@pytest.mark.parametrize("kind", KINDS)
def test_follow_redirects_all_strips_every_secret_header_on_a_cross_origin_hop(kind: str, api: Any, make_api: Any,
                                                                                ctx: RunContext) -> None:
    other = make_api()
    other.route("/landing", landing)
    api.route("/redir", redirect_to(other.url + "/landing"))
    out = call(kind, api.url + "/redir", ctx, **secret_options(follow_redirects="all"))
    if kind == "source":
        assert out == [{"landed": "/landing", "body": ""}]
    (first,) = api.hits("/redir")
    assert {h: first.headers.get(h) for h in LEAKS} == {
        "authorization": f"Bearer {SECRETS['TOKEN']}", "x-api-key": SECRETS["API_KEY"],
        "x-custom": SECRETS["CUSTOM"], "cookie": "s=1"}
    (landed,) = other.hits("/landing")
    assert [h for h in LEAKS if h in landed.headers] == [], "no secret-carrying header crosses origins"
    assert landed.headers["x-trace"] == "t-1", "plain headers still go"
    assert not any(v in json.dumps(landed.headers) for v in SECRETS.values())
    if kind == "sink":
        assert landed.method == "POST" and json.loads(landed.body) == [{"n": 1}], "307 keeps method and body"


def test_credentials_stay_off_after_a_hop_back_to_the_first_origin(api: Any, make_api: Any, ctx: RunContext) -> None:
    other = make_api()
    api.route("/landing", landing)
    other.route("/bounce", redirect_to(api.url + "/landing", 302))
    api.route("/redir", redirect_to(other.url + "/bounce", 302))
    call("http_enrich", api.url + "/redir", ctx, **secret_options(follow_redirects="all"))
    (back,) = api.hits("/landing")
    assert [h for h in LEAKS if h in back.headers] == []


def test_an_api_key_in_the_query_is_not_carried_to_another_origin(api: Any, make_api: Any, ctx: RunContext) -> None:
    other = make_api()
    other.route("/landing", landing)
    api.route("/redir", lambda seen: (302, {"location": f"{other.url}/landing?apikey={seen.query['apikey']}&x=1"},
                                      b""))
    call("source", api.url + "/redir", ctx, follow_redirects="all",
         auth={"type": "api_key", "in": "query", "name": "apikey", "key": SECRETS["API_KEY"]})
    assert api.hits("/redir")[0].query["apikey"] == SECRETS["API_KEY"]
    assert other.hits("/landing")[0].query == {"x": "1"}


@pytest.mark.parametrize("kind", KINDS)
def test_same_origin_redirects_keep_their_headers(kind: str, api: Any, ctx: RunContext) -> None:
    api.route("/landing", landing)
    api.route("/redir", redirect_to("/landing", 308))
    call(kind, api.url + "/redir", ctx, **secret_options())
    (landed,) = api.hits("/landing")
    assert landed.headers["authorization"] == f"Bearer {SECRETS['TOKEN']}"
    assert landed.headers["x-custom"] == SECRETS["CUSTOM"]


def test_follow_redirects_none_makes_a_redirect_an_error(api: Any, ctx: RunContext) -> None:
    api.route("/landing", landing)
    api.route("/redir", redirect_to("/landing"))
    out = call("http_enrich", api.url + "/redir", ctx, follow_redirects="none")
    assert out.dead_letters[0].context["status"] == 307 and "follow_redirects: none" in out.dead_letters[0].reason
    assert api.hits("/landing") == []


def test_a_run_with_secrets_in_headers_never_sends_them_cross_origin(api: Any, make_api: Any, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19's reproduction, end to end: X-Api-Key from secret(), a redirect to another port."""
    monkeypatch.setenv("API_KEY", SECRETS["API_KEY"])
    other = make_api()
    other.route("/", landing)
    api.route("/redir", redirect_to(other.url + "/x"))
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n')
    summary = run_job({"job_name": "redir", "runtime": {"error_rate_threshold": 1},
                       "source": {"type": "jsonl", "path": str(tmp_path / "in.jsonl")},
                       "transform": {"steps": [{"type": "http_enrich", "url": api.url + "/redir", "into": "r",
                                                "follow_redirects": "all",
                                                "headers": {"X-Api-Key": "{{ secret('API_KEY') }}"}}]},
                       "destination": {"type": "jsonl", "path": str(tmp_path / "out")}})
    assert summary.status == "succeeded", summary.error
    assert api.hits("/redir")[0].headers["x-api-key"] == SECRETS["API_KEY"]
    assert "x-api-key" not in other.hits()[0].headers


# -- keep-alive through error answers ------------------------------------------------------------
def test_error_answers_keep_the_connection_alive(api: Any, ctx: RunContext) -> None:
    for i in range(16):
        api.add(rf"/users/e{i}$", status=404 if i % 2 else 503, body=b'{"error": "nope"}', headers=JSON)
    step = build("transform", {"type": "http_enrich", "url": api.url + "/users/{{ record.uid }}", "into": "r",
                               "max_in_flight": 1, "retry": {"attempts": 1}}, ctx)
    out = step.apply(Batch([{"uid": f"e{i}"} for i in range(16)] + [{"uid": str(i)} for i in range(4)], "p", 0))
    step.close()
    assert len(out.records) == 4 and len(out.dead_letters) == 16
    assert len(api.hits("/users/")) == 20
    assert api.connections == 1, f"20 requests, 16 of them 4xx/5xx, on {api.connections} connections"


def test_retries_of_a_page_reuse_the_connection(api: Any, ctx: RunContext) -> None:
    api.route("/items", lambda seen: (200, JSON, b"[]"))
    api.add("/items", status=429, times=3, headers={"retry-after": "0"}, body=b"slow down " * 100)
    out = call("source", api.url + "/items", ctx, retry={"attempts": 4, "initial_backoff_s": 0.01})
    assert out == [] and len(api.hits("/items")) == 4 and api.connections == 1


# -- what a dead letter says -----------------------------------------------------------------------
def test_a_dead_letters_attempts_are_the_attempts_made(api: Any, tmp_path: Path) -> None:
    api.add(r"/users/", status=503, times=100)
    (tmp_path / "in.jsonl").write_text('{"uid": "1"}\n')
    summary = run_job({"job_name": "attempts", "runtime": {"error_rate_threshold": 1},
                       "source": {"type": "jsonl", "path": str(tmp_path / "in.jsonl")},
                       "transform": {"steps": [{"type": "http_enrich", "url": api.url + "/users/{{ record.uid }}",
                                                "into": "r", "retry": {"attempts": 3, "initial_backoff_s": 0.01}}]},
                       "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
                       "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")}})
    assert summary.status == "succeeded", summary.error
    (dead,) = read_jsonl(tmp_path / "dead")
    assert dead["attempts"] == 3 and dead["context"]["attempts"] == 3 and len(api.hits("/users/")) == 3
    assert dead["context"]["status"] == 503


def test_a_json_mode_failure_records_the_real_status(api: Any, ctx: RunContext) -> None:
    step = build("transform", {"type": "http_enrich", "url": api.url + "/text", "into": "r", "response": "json"},
                 ctx)
    out = step.apply(Batch([{"n": 1}], "p", 0))
    step.close()
    dead = out.dead_letters[0]
    assert "not JSON" in dead.reason and dead.context["status"] == 200 and dead.attempts == 1
