"""``connection: <id>`` on postgres components: the plugin maps an orchestrator's postgres
connection (Airflow keeps the database in ``schema``) onto its own fields; the password becomes a
secret() template, never a value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sluice import hookimpl
from sluice.connections import Connection
from sluice.registry import get_registry
from sluice.testing import load_test_job, run_job

from .helpers import FAST_RUNTIME, PASSWORD, Db, write_jsonl


def conn(**fields: Any) -> Connection:
    return Connection("pg_test", "postgres", secret_prefix="test:", **fields)


def fields(connection: Connection, component_type: str = "postgres") -> Any:
    return get_registry().hook().sluice_connection_fields(component_type=component_type, connection=connection)


def test_a_postgres_connection_maps_onto_the_connection_fields() -> None:
    connection = conn(host="db.internal", port=6432, login="loader", schema="warehouse", has_password=True,
                      extra={"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "application_name": "etl",
                             "connect_timeout": "5", "unrelated": "x"})
    assert fields(connection) == {
        "host": "db.internal", "port": 6432, "user": "loader", "database": "warehouse",
        "password": "{{ secret('test:pg_test:password') }}", "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.pem", "application_name": "etl", "connect_timeout_s": 5}
    assert fields(connection, "postgresql") == fields(connection)


def test_a_placeholder_maps_to_nothing_and_other_types_are_not_ours() -> None:
    from sluice_postgres import plugin

    assert fields(Connection.unresolved("pg_test")) == {}
    assert plugin.sluice_connection_fields(component_type="s3", connection=conn(host="x")) is None


class FakeOrchestrator:
    """A postgres connection and its password, as sluice-airflow provides them inside Airflow."""

    def __init__(self, port: int) -> None:
        self.connection = conn(host="127.0.0.1", port=port, login="sluice_pw", schema="postgres", has_password=True)

    @hookimpl
    def sluice_lookup_connection(self, conn_id: str) -> Connection | None:
        return self.connection if conn_id == "pg_test" else None

    @hookimpl
    def sluice_resolve_secret(self, name: str) -> str | None:
        return PASSWORD if name == "test:pg_test:password" else None


def test_a_job_loads_through_a_connection(pg: Db, tmp_path: Path, sluice_registry: Any) -> None:
    from sluice_postgres import plugin

    sluice_registry(plugin, FakeOrchestrator(pg.server.port))
    pg.sql("CREATE TABLE events (n integer)")
    write_jsonl(tmp_path / "in.jsonl", [{"n": 1}, {"n": 2}])
    job = {"job_name": "via_connection", "runtime": FAST_RUNTIME, "source": {"type": "jsonl", "path": "in.jsonl"},
           "destination": {"type": "postgres", "connection": "pg_test", "table": pg.t("events")}}
    spec = load_test_job(job).destination
    assert spec.config.password.get_secret_value() == PASSWORD and spec.config.user == "sluice_pw"
    summary = run_job(job)
    assert summary.status == "succeeded", summary.error
    assert pg.sql("SELECT n FROM events ORDER BY n") == [(1,), (2,)]


def test_loading_the_plugin_imports_no_client_library() -> None:
    code = ("import sys; from sluice.registry import get_registry; r = get_registry(); "
            "assert r.get('sink', 'postgres', 't') and r.get('source', 'postgresql', 't'); "
            "assert 'psycopg' not in sys.modules, 'psycopg imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
