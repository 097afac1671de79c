"""Fixtures for metrics and the run history: the test components and real servers.

- ``pushgateway``: Debian's ``prometheus-pushgateway`` on a free port for the session, wiped before
  each test; skipped, with the reason, where it is not installed (``.ci/run`` installs it).
- ``statsd``: a UDP socket the test reads StatsD lines from.
- ``history_url``: the run history in SQLite, or in PostgreSQL (``pgserver``, one server for the
  session and a schema of its own per test); tests taking it run on both.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sluice_metrics.plugin

from . import fakes
from .helpers import free_port

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")


@pytest.fixture(autouse=True)
def registry(sluice_registry: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test components and the exporters of sluice-metrics; no metrics or history settings
    from the environment."""
    monkeypatch.delenv("SLUICE_METRICS", raising=False)
    monkeypatch.delenv("SLUICE_HISTORY", raising=False)
    return sluice_registry(fakes, sluice_metrics.plugin)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """`sluice run` in-process points structlog at this test's captured stderr: put it back after."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def pushgateway_server() -> Iterator[str]:
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway; "
                    ".ci/run installs it)")
    port = free_port()
    process = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=",
                                "--web.enable-admin-api"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the Pushgateway did not start on port {port}")
            time.sleep(0.05)
    yield url
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def pushgateway(pushgateway_server: str) -> str:
    """The session's Pushgateway, emptied."""
    urllib.request.urlopen(urllib.request.Request(f"{pushgateway_server}/api/v1/admin/wipe", method="PUT")).read()
    return pushgateway_server


@pytest.fixture
def statsd() -> Iterator[socket.socket]:
    """A UDP socket on a free port of 127.0.0.1, standing in for a StatsD daemon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    """A real PostgreSQL 16 for the session (pgserver), as its superuser's URI over a Unix socket."""
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset (CI, root)
        warnings.simplefilter("ignore")
        import pgserver

    # not under pytest's basetemp: the server runs as another user (pgserver) when the tests run as root
    root = Path(tempfile.mkdtemp(prefix="sluice-history-pg-"))
    server = pgserver.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``$SLUICE_HISTORY`` for the test: a SQLite file, or a fresh schema on the session's PostgreSQL."""
    if request.param == "sqlite":
        url = str(tmp_path / "history.db")
    else:
        import psycopg

        uri = request.getfixturevalue("pg_uri")
        schema = f"h_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{uri}&options={urllib.parse.quote(f'-c search_path={schema}')}"
    monkeypatch.setenv("SLUICE_HISTORY", url)
    return url
