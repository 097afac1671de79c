"""What the sink does when things go wrong: transient SQLSTATEs are retried, others are not; a
killed connection reconnects; a batch committed just before a crash is never loaded twice; a down
server, a wrong password and a TLS refusal fail with one clear line that never shows a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice import Batch, SinkRun
from sluice.testing import build, make_context

from .helpers import FAST_RETRY, PASSWORD, Db, job
from .test_sink import dead_letters, load

SLUICE = str(Path(sys.executable).with_name("sluice"))
RECORDS = [{"id": i, "name": f"r{i}"} for i in range(30)]


def failing_trigger(pg: Db, body: str) -> None:
    """A statement trigger on ``events`` running ``body`` (PL/pgSQL); ``tries`` counts its calls
    outside any transaction (a sequence), so a rolled-back attempt still counts."""
    pg.sql("CREATE SEQUENCE tries")
    pg.sql(f"CREATE FUNCTION trouble() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$")
    pg.sql("CREATE TRIGGER trouble AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION trouble()")


@pytest.fixture
def events(pg: Db) -> None:
    pg.sql("CREATE TABLE events (id integer, name text)")


@pytest.mark.parametrize(("state", "name"), [("40001", "serialization failure"), ("40P01", "deadlock")])
def test_transient_sqlstates_are_retried_and_load_every_row_once(pg: Db, tmp_path: Path, events: None,
                                                                  state: str, name: str) -> None:
    failing_trigger(pg, f"IF nextval('{pg.schema}.tries') <= 2 THEN "
                        f"RAISE EXCEPTION '{name}' USING ERRCODE = '{state}'; END IF;")
    summary = load(pg, tmp_path, RECORDS, pg.sink())
    assert summary.status == "succeeded" and summary.retries == 2
    assert sorted(r[0] for r in pg.sql("SELECT id FROM events")) == list(range(30))


def test_other_sqlstates_fail_at_once_without_retrying(pg: Db, tmp_path: Path, events: None) -> None:
    failing_trigger(pg, "RAISE EXCEPTION 'no' USING ERRCODE = '42501';")
    summary = load(pg, tmp_path, RECORDS, pg.sink())
    assert summary.status == "failed" and summary.retries == 0
    assert "SQLSTATE 42501" in summary.error and "--resume" in summary.error
    assert pg.sql("SELECT count(*) FROM events") == [(0,)]


def test_a_connection_terminated_mid_load_reconnects_and_loads_every_row_once(pg: Db, tmp_path: Path,
                                                                             events: None) -> None:
    failing_trigger(pg, f"IF nextval('{pg.schema}.tries') = 2 THEN PERFORM pg_terminate_backend(pg_backend_pid()); "
                        "END IF;")
    summary = load(pg, tmp_path, RECORDS, pg.sink())
    assert summary.status == "succeeded" and summary.retries >= 1
    assert sorted(r[0] for r in pg.sql("SELECT id FROM events")) == list(range(30))


def batches(records: list[dict[str, Any]]) -> list[Batch]:
    return [Batch([dict(r) for r in records[i:i + 10]], "p", n, {"line": i + 10})
            for n, i in enumerate(range(0, len(records), 10))]


def test_a_batch_committed_before_a_crash_is_not_loaded_again_and_keeps_its_dead_letters(pg: Db) -> None:
    """The engine saves its checkpoint just after the sink commits: a kill in between makes
    --resume read the batch again. The checkpoint row committed with the rows says it is there."""
    pg.sql("CREATE TABLE events (id integer, name text NOT NULL)")
    records = [{"id": i, "name": None if i == 13 else f"r{i}"} for i in range(40)]
    first = build("sink", pg.sink())
    first.prepare(SinkRun())
    first.start_partition("p", 0)
    before = [first.write(b) for b in batches(records)[:3]]  # batches 0-2 commit; the engine saved only 0
    first.close()

    ctx = make_context()
    ctx.resume = True
    again = build("sink", pg.sink(), ctx)
    again.prepare(SinkRun(resume=True))
    again.start_partition("p", 1)
    after = [again.write(b) for b in batches(records)[1:]]
    again.close()

    assert sorted(r[0] for r in pg.sql("SELECT id FROM events")) == [i for i in range(40) if i != 13]
    assert [r.written for r in after[:2]] == [r.written for r in before[1:]] == [9, 10]
    [dead] = after[0].dead_letters
    assert dead.record == records[13] and dead.context["sqlstate"] == "23502"
    assert dead.reason == before[1].dead_letters[0].reason
    assert [s for _, s, _ in pg.ledger()] == [0, 1, 2, 3]


def test_append_refuses_to_load_a_batch_again_when_its_input_changed(pg: Db) -> None:
    pg.sql("CREATE TABLE events (id integer, name text)")
    sink = build("sink", pg.sink())
    sink.prepare(SinkRun())
    sink.start_partition("p", 0)
    sink.write(batches(RECORDS)[0])
    changed = Batch(RECORDS[:7], "p", 0, {"line": 7})
    with pytest.raises(Exception, match="append never loads a batch twice"):
        sink.write(changed)
    sink.close()
    assert pg.sql("SELECT count(*) FROM events") == [(10,)]


def test_a_down_server_is_retried_then_fails_the_run_naming_it(pg: Db, tmp_path: Path) -> None:
    block = {"type": "postgres", "host": str(tmp_path / "no-server-here"), "port": 5999, "table": "events"}
    summary = load(pg, tmp_path, RECORDS, block)
    assert summary.status == "failed" and summary.retries == FAST_RETRY["attempts"] - 1
    assert "connecting failed" in summary.error and "no-server-here" in summary.error


def run_cli(tmp_path: Path, destination: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    (folder / "a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in RECORDS))
    path = tmp_path / "job.json"
    path.write_bytes(orjson.dumps(job("cli", {"type": "jsonl", "path": str(folder)}, destination)))
    import os

    return subprocess.run([SLUICE, "run", str(path), "--ds", "2024-01-01"], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=tmp_path, timeout=120)


def test_a_wrong_password_fails_at_once_and_is_never_printed(pg: Db, tmp_path: Path, events: None) -> None:
    wrong = "Wr0ng-Passw0rd-123"
    block = {"type": "postgres", "dsn": pg.uri, "user": "sluice_pw", "password": "{{ secret('PG_TEST_PASSWORD') }}",
             "table": pg.t("events")}
    result = run_cli(tmp_path, block, {"PG_TEST_PASSWORD": wrong})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "password authentication failed" in output and "sluice_pw" in output
    assert wrong not in output and '"retries":0' in result.stdout.replace(" ", "")
    right = run_cli(tmp_path, block, {"PG_TEST_PASSWORD": PASSWORD})
    assert right.returncode == 0, right.stderr
    assert PASSWORD not in right.stdout + right.stderr


def test_connection_fields_over_tcp_with_a_password(pg: Db, tmp_path: Path, events: None) -> None:
    block = {"type": "postgres", "host": "127.0.0.1", "port": pg.server.port, "database": "postgres",
             "user": "sluice_pw", "password": PASSWORD, "table": pg.t("events"), "application_name": "nightly-load"}
    sink = build("sink", block)
    with sink.pool.connection() as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("nightly-load",)
        assert conn.execute("SELECT current_user, inet_server_addr()::text").fetchone() == ("sluice_pw", "127.0.0.1/32")
    assert PASSWORD not in sink.describe() and sink.describe().startswith("sluice_pw@127.0.0.1:")
    sink.close()


def test_the_default_application_name_names_the_job(pg: Db, events: None) -> None:
    sink = build("sink", pg.sink())
    with sink.pool.connection() as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("sluice/test",)
    sink.close()


@pytest.mark.parametrize("tls", [{"sslmode": "require"}, {"sslmode": "verify-full", "sslrootcert": "/x/ca.pem"}],
                         ids=["require", "verify-full"])
def test_tls_options_reach_libpq_and_a_tls_failure_is_not_retried(pg: Db, tmp_path: Path, events: None,
                                                                  tls: dict[str, str]) -> None:
    """pgserver's build has no TLS: a job that requires it must fail at once, one clear line."""
    block = {"type": "postgres", "host": "127.0.0.1", "port": pg.server.port, "user": "postgres",
             "database": "postgres", "table": pg.t("events")}
    summary = load(pg, tmp_path, RECORDS, {**block, **tls})
    assert summary.status == "failed" and summary.retries == 0
    assert "server does not support SSL, but SSL was required" in summary.error
    assert load(pg, tmp_path, RECORDS, {**block, "sslmode": "disable"}, name="plain").status == "succeeded"


def test_a_dsn_with_a_password_is_never_shown(pg: Db, tmp_path: Path, events: None) -> None:
    dsn = f"postgresql://sluice_pw:{PASSWORD}@127.0.0.1:{pg.server.port}/postgres"
    summary = load(pg, tmp_path, RECORDS, {"type": "postgres", "dsn": dsn, "table": pg.t("events")})
    assert summary.status == "succeeded"
    sink = build("sink", {"type": "postgres", "dsn": dsn, "table": pg.t("events")})
    assert PASSWORD not in sink.describe() and PASSWORD not in repr(sink.config)
    sink.close()
    assert not dead_letters(tmp_path)
