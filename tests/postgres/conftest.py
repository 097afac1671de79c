"""A real PostgreSQL 16 for the session (``pgserver``), and a fresh schema per test.

The server listens on its Unix socket (the URI pgserver returns, trust login for ``postgres``)
and, for the TLS and password tests, on 127.0.0.1. Role ``sluice_pw`` must log in with its
password (SCRAM), over the socket and over TCP. pgserver's build has no TLS support, so the TLS
tests check that the options reach libpq and that a TLS failure is not retried.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .helpers import PASSWORD, Db


@dataclass
class PgServer:
    """The session's server: the superuser URI (Unix socket) and its TCP port on 127.0.0.1."""

    uri: str
    port: int

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.uri, autocommit=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with warnings.catch_warnings():  # platformdirs warns that XDG_RUNTIME_DIR is unset (CI, root)
        warnings.simplefilter("ignore")
        import pgserver
        from pgserver._commands import pg_ctl
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    # not under pytest's basetemp: every pytest session (ours or another's) makes that private again,
    # and the server runs as another user (pgserver) when the tests run as root
    root = Path(tempfile.mkdtemp(prefix="sluice-pg-"))
    data = root / "data"
    server = pgserver.get_server(data, cleanup_mode=None)  # restarted below to listen on TCP too
    uri = server.get_uri()
    socket_dir = conninfo_to_dict(uri)["host"]
    port = _free_port()
    hba = data / "pg_hba.conf"
    hba.write_text("local all sluice_pw scram-sha-256\nhost all sluice_pw 127.0.0.1/32 scram-sha-256\n"
                   + hba.read_text())
    server.psql(f"CREATE ROLE sluice_pw LOGIN SUPERUSER PASSWORD '{PASSWORD}';")
    pg_ctl(["-w", "-m", "fast", "-o", f"-h 127.0.0.1 -p {port} -k {socket_dir}", "-l", str(data / "log"), "restart"],
           pgdata=data, user=server.system_user, timeout=30)
    try:  # pgserver's URI, on the port the server now has (the socket file is named after it)
        yield PgServer(make_conninfo(uri, port=port), port)
    finally:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=data, user=server.system_user, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[Db]:
    """A fresh schema on the session's server; the sink's checkpoint and stage tables land there too."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with pg_server.connect() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield Db(pg_server.uri, schema, pg_server)
    with pg_server.connect() as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
