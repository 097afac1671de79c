"""A test-owned HTTP proxy that sits in front of a real server and injects faults.

Tests point a client at ``proxy.url`` instead of the server and add faults: an error status for
matching requests, a dropped connection, a response cut short, latency, or a rewritten response
(e.g. some bulk items turned into 429s). Each fault fires ``times`` times, then the request goes
through untouched. Every request is recorded, so tests can count retries as the server saw them.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Rewrite = Callable[[int, dict[str, str], bytes, bytes], tuple[int, dict[str, str], bytes]]
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """What to do to requests matching ``method`` and the ``path`` regex, ``times`` times."""

    method: str | None = None
    path: str = ".*"
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without any response
    truncate: bool = False  # forward, then send headers and half the body and close
    delay_s: float = 0.0
    rewrite: Rewrite | None = None  # forward, then change the response
    times: int = 1
    every: int = 0  # > 0: fire on every ``every``-th matching request, without limit (``times`` unused)
    fired: int = 0
    matched: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and re.search(self.path, path) is not None


@dataclass
class Seen:
    method: str
    path: str
    status: int | None
    fault: str | None


class FaultProxy:
    """A threaded reverse proxy to ``upstream`` (``http://host:port``) with injectable faults."""

    def __init__(self, upstream: str, record: bool = True) -> None:
        """``record=False`` keeps no list of requests (a long soak would grow it without end)."""
        self.record = record
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._take(self.command, self.path)
                if fault and fault.delay_s:
                    time.sleep(fault.delay_s)
                if fault and fault.drop:
                    proxy._record(self.command, self.path, None, "drop")
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if fault and fault.status is not None:
                    proxy._record(self.command, self.path, fault.status, f"status {fault.status}")
                    self._send(fault.status, {"Content-Type": "application/json", **fault.headers}, fault.body)
                    return
                status, headers, data = proxy._forward(self.command, self.path, dict(self.headers), body)
                if fault and fault.rewrite:
                    status, headers, data = fault.rewrite(status, headers, body, data)
                if fault and fault.truncate and len(data) > 1:
                    proxy._record(self.command, self.path, status, "truncate")
                    self._send(status, headers, data, cut=len(data) // 2)
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                proxy._record(self.command, self.path, status, "rewrite" if fault and fault.rewrite else None)
                self._send(status, headers, data)

            def _send(self, status: int, headers: dict[str, str], data: bytes, cut: int | None = None) -> None:
                """Send a response announcing all of ``data``; with ``cut``, only that many bytes follow."""
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data if cut is None else data[:cut])

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")
        self._thread.start()

    def add(self, **kwargs: object) -> Fault:
        """Add a fault (see ``Fault`` for the options) and return it, to check ``fired`` later."""
        fault = Fault(**kwargs)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    def count(self, method: str | None = None, path: str = ".*") -> int:
        """Requests the proxy received (faulted or not) matching method and path regex."""
        with self._lock:
            return sum(1 for s in self.seen if (method is None or s.method == method) and re.search(path, s.path))

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.matches(method, path):
                    continue
                fault.matched += 1
                due = fault.matched % fault.every == 0 if fault.every else fault.fired < fault.times
                if due:
                    fault.fired += 1
                    return fault
        return None

    def _record(self, method: str, path: str, status: int | None, fault: str | None) -> None:
        if not self.record:
            return
        with self._lock:
            self.seen.append(Seen(method, path, status, fault))

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            fwd = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            fwd["Content-Length"] = str(len(body))
            conn.request(method, path, body=body if body or method in ("POST", "PUT") else None, headers=fwd)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k: v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
