"""Local server processes for the demo and the benchmarks: an OpenSearch-compatible server
(osmem-server) and an S3 server (moto), each in its own process, stopped on exit.

Only the standard library talks to them here (urllib), so core stays free of client libraries.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SluiceError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 120) -> Any:
    """One HTTP request; JSON responses are decoded."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = resp.read()
    except urllib.error.HTTPError as exc:
        raise SluiceError(f"{method} {url}: HTTP {exc.code}: {exc.read()[:300]!r}") from None
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data


@dataclass
class Server:
    """A server process and its base URL."""

    name: str
    url: str
    process: Any
    closers: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        for close in self.closers:
            close()
        if hasattr(self.process, "poll") and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    @property
    def pid(self) -> int:
        return int(self.process.pid)


def start_opensearch() -> Server:
    """osmem-server: an in-memory OpenSearch-compatible server (a native binary, its own process)."""
    try:
        from osmem_server import OsmemServer
    except ImportError:
        raise SluiceError("the demo needs osmem-server: pip install 'sluice[demo]'") from None
    server = OsmemServer.start(japanese=False)
    return Server("opensearch", server.url, server.process, [server.close])


def start_s3() -> Server:
    """moto in server mode (S3 over real HTTP), as its own process."""
    port = free_port()
    cmd = [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SluiceError("the S3 server (moto) exited at start; the demo needs pip install 'sluice[demo]'")
        try:
            http("GET", f"{url}/moto-api/data.json", timeout=2)
            return Server("s3", url, process)
        except (OSError, SluiceError):
            time.sleep(0.2)
    process.kill()
    raise SluiceError("the S3 server (moto) did not start within 30 s")


def create_bucket(s3_url: str, bucket: str) -> None:
    """Create a bucket on moto (path-style; moto does not check signatures)."""
    http("PUT", f"{s3_url}/{bucket}")


def bulk_index(es_url: str, index: str, docs: Iterable[tuple[str, dict[str, Any]]], chunk: int = 5000) -> int:
    """Index ``(id, doc)`` pairs with the bulk API in chunks; returns how many were indexed."""
    import orjson

    total = 0
    lines: list[bytes] = []

    def flush() -> None:
        nonlocal total, lines
        if not lines:
            return
        result = http("POST", f"{es_url}/_bulk", b"".join(lines), {"Content-Type": "application/x-ndjson"})
        if result.get("errors"):
            raise SluiceError(f"seeding {index} failed: {str(result)[:300]}")
        total += len(lines) // 2
        lines = []

    for doc_id, doc in docs:
        lines.append(orjson.dumps({"index": {"_index": index, "_id": doc_id}}) + b"\n")
        lines.append(orjson.dumps(doc) + b"\n")
        if len(lines) >= chunk * 2:
            flush()
    flush()
    http("POST", f"{es_url}/{index}/_refresh")
    return total


def create_index(es_url: str, index: str, body: dict[str, Any]) -> None:
    import orjson

    http("PUT", f"{es_url}/{index}", orjson.dumps(body), {"Content-Type": "application/json"})


def list_keys(s3_url: str, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` (ListObjectsV2 over plain HTTP; moto does not check signatures)."""
    import xml.etree.ElementTree as ET
    from urllib.parse import quote

    keys: list[str] = []
    token = ""
    while True:
        url = f"{s3_url}/{bucket}?list-type=2&prefix={quote(prefix)}" + (f"&continuation-token={quote(token)}"
                                                                         if token else "")
        root = ET.fromstring(http("GET", url))
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""  # S3's XML namespace
        keys.extend(key.text or "" for el in root.findall(f"{ns}Contents") for key in el.findall(f"{ns}Key"))
        nxt = root.findall(f"{ns}NextContinuationToken")
        if not nxt:
            return keys
        token = nxt[0].text or ""


def count(es_url: str, index: str) -> int:
    return int(http("GET", f"{es_url}/{index}/_count")["count"])


def start_postgres() -> Server | None:
    """PostgreSQL 16 from pgserver (its own processes, data in a temporary folder removed on stop);
    None when pgserver is not installed (the demo then skips its Postgres job)."""
    import tempfile
    import warnings

    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        return None
    server = pgserver.get_server(tempfile.mkdtemp(prefix="sluice-demo-pg-"), cleanup_mode="delete")
    return Server("postgres", server.get_uri(), None, [server.cleanup])


def psql(server: Server, sql: str) -> str:
    """``sql`` through the psql that pgserver ships (aligned table output), so core needs no client."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return subprocess.run([str(POSTGRES_BIN_PATH / "psql"), server.url, "-X", "-q", "-c", sql], check=True,
                          capture_output=True, text=True, timeout=60).stdout
