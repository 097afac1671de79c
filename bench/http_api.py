"""A local JSON API for the HTTP benchmarks, in its own process, answering every request after a
fixed latency (like an API across a network). ``python -m bench.http_api RECORDS PER_PAGE LATENCY_MS``
prints the port it listens on.

- ``GET /accounts/<a>/events?page=N&per_page=P`` pages through ``RECORDS`` records of account
  ``a`` (``{"data": [...]}``; the page after the last full one is short or empty).
- ``POST /ingest`` reads the body and answers ``{"accepted": true}``.
"""

from __future__ import annotations

import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson


def record(account: str, n: int) -> dict[str, Any]:
    """About 200 bytes of JSON, like an API's event."""
    return {"id": f"{account}-{n:07d}", "account": account, "n": n, "type": "invoice.paid",
            "created": f"2024-01-01T{n % 24:02d}:{n % 60:02d}:00Z", "amount": (n * 37) % 10_000 / 100,
            "currency": "EUR", "customer": {"id": f"cus_{n % 997:04d}", "country": "DE"}}


def main(records: int, per_page: int, latency_ms: float) -> None:
    delay = latency_ms / 1000
    pages: dict[tuple[str, int], bytes] = {}

    def page(account: str, number: int, size: int) -> bytes:
        key = (f"{account}/{size}", number)
        if key not in pages:
            start = (number - 1) * size
            data = [record(account, n) for n in range(start, min(start + size, records))]
            pages[key] = orjson.dumps({"data": data})
        return pages[key]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            # headers and body leave in two writes: without this, Nagle's algorithm and the client's
            # delayed ACK hold the body back ~40 ms on every request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _reply(self, body: bytes) -> None:
            time.sleep(delay)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            query = dict(parse_qsl(split.query))
            account = split.path.split("/")[2]
            self._reply(page(account, int(query.get("page", 1)), int(query.get("per_page", per_page))))

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self._reply(b'{"accepted": true}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
