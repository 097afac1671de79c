"""sluice-http as a plugin: it owns http_enrich now, loads without importing httpx, maps orchestrator
connections, and its pure parts (bodies, URL redaction, pagination positions) behave."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sluice import secrets
from sluice.connections import Connection
from sluice_http.bodies import Malformed, kind_of, parse_page
from sluice_http.connections import http_fields
from sluice_http.paging import Page, Pagination, Paginator, Position
from sluice_http.redact import redact_url, secret_headers

VENV_BIN = Path(sys.executable).parent


def test_the_plugin_module_imports_no_client_library() -> None:
    code = ("import sys, sluice_http.plugin as p; p.sluice_sources(); p.sluice_sinks(); p.sluice_transforms(); "
            "heavy = [m for m in ('httpx', 'httpcore', 'boto3', 'elasticsearch', 'opensearchpy', 'airflow') "
            "if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_http_enrich_is_provided_by_sluice_http_only() -> None:
    proc = subprocess.run([str(VENV_BIN / "sluice"), "plugins", "--json"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    plugins = {p["distribution"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert plugins["sluice-http"]["types"] == {"source": ["http"], "sink": ["http"], "transform": ["http_enrich"]}
    assert "http_enrich" not in plugins["sluice-transforms"]["types"]["transform"]


def test_an_http_connection_maps_to_base_url_and_credentials() -> None:
    conn = Connection("my_api", "http", host="api.example.com", schema="https", port=8443, login="etl",
                      has_password=True, extra={"headers": {"X-Team": "data"}})
    assert http_fields(conn) == {
        "base_url": "https://api.example.com:8443",
        "auth": {"type": "basic", "username": "etl", "password": "{{ secret('my_api:password') }}"},
        "headers": {"X-Team": "data"}}
    token = Connection("t", host="https://api.example.com/v2", extra={"token": "x"})
    assert http_fields(token) == {"base_url": "https://api.example.com/v2",
                                  "auth": {"type": "bearer", "token": "{{ secret('t:extra.token') }}"}}
    assert http_fields(Connection.unresolved("x")) == {"base_url": "https://connection-x.invalid"}


def test_urls_are_shown_without_credentials() -> None:
    secrets.remember("hunter2-value")
    shown = redact_url("https://u:p@api.example.com/x?access_token=abc&page=2", [("q", "hunter2-value"),
                                                                                   ("apikey", "k")], ["apikey"])
    assert shown == "https://***@api.example.com/x?access_token=***&page=2&q=***&apikey=***"
    assert secret_headers({"X-Api-Key": "k", "X-Trace": "t", "X-Other": "has hunter2-value"}) == {
        "x-api-key", "x-other"}


def test_page_bodies() -> None:
    assert kind_of("application/x-ndjson; charset=utf-8", "auto") == "jsonl"
    assert kind_of("text/csv", "auto") == "csv" and kind_of("", "auto") == "json"
    assert parse_page(b'{"a": {"b": [{"x": 1}]}}', "json", ("a", "b")).items == [{"x": 1}]
    assert parse_page(b'{"a": {"b": null}}', "json", ("a", "b")).items == []
    with pytest.raises(Malformed, match="not a list; set records"):
        parse_page(b'{"x": 1}', "json", None)
    with pytest.raises(Malformed, match=r"has no 'a\.c'"):
        parse_page(b'{"a": {}}', "json", ("a", "c"))


def test_positions_round_trip_through_checkpoints() -> None:
    pager = Paginator(Pagination(type="offset", size=5))
    first = pager.first()
    assert first.checkpoint() == {"offset": 0}
    after = pager.next(first, Page(5))
    assert after == Position(1, offset=5, seen=5)
    assert Position.from_checkpoint(after.checkpoint()) == after
    assert pager.next(after, Page(3)).done, "a short page is the last"
    cursor = Paginator(Pagination(type="cursor", next="next"))
    pos = cursor.next(cursor.first(), Page(2, {"next": "abc"}))
    assert pos.cursor == "abc" and cursor.next(pos, Page(2, {"next": "abc"})).done, "a repeated cursor stops"
