"""Fixtures for the HTTP tests: scriptable local HTTP APIs over real sockets.

``api`` is a ThreadingHTTPServer speaking HTTP/1.1 with keep-alive. By default ``GET /users/<id>``
answers ``{"id": <id>, "country": ..., "tier": ...}`` and any other path echoes the request. Tests
script faults with ``api.add(path_regex, status=..., times=..., headers=..., delay_s=...)`` and add
endpoints with ``api.route(path_regex, handler)`` (``handler(seen) -> (status, headers, body)``);
every request is recorded with its arrival time and the client's port (the connection it came on).
``make_api()`` starts more servers (another origin, for redirects).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest


@dataclass
class Rule:
    """Answer requests matching ``path`` (a regex) with ``status`` for the next ``times`` requests."""

    path: str
    status: int = 200
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes = b""


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float
    port: int


class Api:
    """The scriptable server; ``url`` is its base URL."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.rules: list[Rule] = []
        self.routes: list[tuple[str, Callable[[Seen], tuple[int, dict[str, str], bytes]]]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with api.lock:
                    api.connections += 1

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                seen = Seen(self.command, split.path, dict(parse_qsl(split.query)),
                            {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic(),
                            self.client_address[1])
                with api.lock:
                    api.requests.append(seen)
                    api.active += 1
                    api.max_active = max(api.max_active, api.active)
                    rule = next((r for r in api.rules if r.times > 0 and re.search(r.path, split.path)), None)
                    if rule is not None:
                        rule.times -= 1
                try:
                    status, headers, payload, delay = api.answer(seen, rule)
                    if delay:
                        time.sleep(delay)
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    with api.lock:
                        api.active -= 1

            do_GET = do_POST = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def answer(self, seen: Seen, rule: Rule | None) -> tuple[int, dict[str, str], bytes, float]:
        if rule is not None:
            return rule.status, rule.headers, rule.body, rule.delay_s
        route = next((fn for path, fn in self.routes if re.search(path, seen.path)), None)
        if route is not None:
            return (*route(seen), 0.0)
        json_type = {"content-type": "application/json"}
        m = re.fullmatch(r"/users/([^/]+)", seen.path)
        if m:
            uid = m.group(1)
            payload = {"id": uid, "country": f"C{uid}", "tier": {"name": "gold" if uid.endswith("1") else "basic"}}
            return 200, json_type, json.dumps(payload).encode(), 0.0
        if seen.path.startswith("/slow/"):
            return 200, json_type, b'{"slow": true}', float(seen.query.get("s", "0.1"))
        if seen.path == "/text":
            return 200, {"content-type": "text/plain"}, b"plain words", 0.0
        echo = {"method": seen.method, "path": seen.path, "query": seen.query, "body": seen.body.decode(),
                "authorization": seen.headers.get("authorization"), "x_key": seen.headers.get("x-key")}
        return 200, json_type, json.dumps(echo).encode(), 0.0

    def add(self, path: str = ".*", status: int = 503, times: int = 1, headers: dict[str, str] | None = None,
            delay_s: float = 0.0, body: bytes = b"") -> None:
        """Script the next ``times`` requests matching ``path``."""
        with self.lock:
            self.rules.append(Rule(path, status, times, headers or {}, delay_s, body))

    def route(self, path: str, handler: Callable[[Seen], tuple[int, dict[str, str], bytes]]) -> None:
        """Answer requests whose path matches ``path`` with ``handler(seen)`` (scripted faults come first)."""
        with self.lock:
            self.routes.append((path, handler))

    def hits(self, path: str = ".*") -> list[Seen]:
        """Requests whose path matches ``path``, in arrival order."""
        with self.lock:
            return [r for r in self.requests if re.search(path, r.path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[Api]:
    """A fresh scriptable HTTP API for one test."""
    server = Api()
    yield server
    server.close()


@pytest.fixture
def make_api() -> Iterator[Callable[[], Api]]:
    """Start more APIs (each its own origin); all are closed after the test."""
    servers: list[Api] = []

    def make() -> Api:
        servers.append(Api())
        return servers[-1]

    yield make
    for server in servers:
        server.close()
