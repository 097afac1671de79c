"""``replace_interval``: a run's rows wait in a stage table until commit swaps the interval at once.

Why a stage table: a staged run's loads write their partitions from several processes, each may
be cleared and re-run alone, and ``prepare`` may never remove published rows. Deleting the
interval at the first write would delete what other loads already wrote, and a re-run load could
not find its own rows in the target (nothing marks which partition wrote a row). So each load
writes into ``sluice_stage_<hash>`` (one per target, job and run), every row tagged with its
partition and batch; a partition written again replaces its tagged rows there. ``commit`` then
deletes the interval's rows from the target and inserts the staged rows of the run's partitions
in one transaction: readers see the old interval or the new one, never a mix, and a failed run
leaves the target untouched.

The stage table copies the target's columns, defaults, NOT NULL and CHECK constraints, unique
indexes and foreign keys, so a bad row is refused (and dead-lettered) when its batch is loaded, not
at commit. It is kept ``stage_retention`` after the commit, so a load task cleared meanwhile can be
re-run with a new finalize; a later commit of the same job drops it. Its table comment (JSON) says
which job, run and table it belongs to.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from sluice import PermanentError

from .catalog import Table, ident
from .columns import array_literal
from .ledger import Ledger

if TYPE_CHECKING:
    import psycopg

PREFIX = "sluice_stage_"
_IDENT = r'(?:"(?:[^"]|"")*"|[^\s".]+)'
INDEX_DEF = re.compile(rf"^CREATE UNIQUE INDEX {_IDENT} ON (?:ONLY )?(?:{_IDENT}\.)?{_IDENT} (USING .*)$", re.S)
TAGS = ("_sluice_partition", "_sluice_seq", "_sluice_row")


def stage_name(target: str, job: str, run_id: str) -> str:
    return PREFIX + hashlib.sha1(f"{target}|{job}|{run_id}".encode()).hexdigest()[:20]


class StageGone(PermanentError):
    """The run's stage table is missing: it was dropped after its retention, or prepare never ran."""


class Stage:
    """The stage table of one (target, job, run)."""

    def __init__(self, schema: str, target: Table, job: str, run_id: str) -> None:
        self.schema = schema
        self.target = target
        self.job, self.run_id = job, run_id
        self.name = stage_name(target.label, job, run_id)
        self.qualified = f"{ident(schema)}.{ident(self.name)}"

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        return conn.execute("SELECT to_regclass(%s)", (self.qualified,)).fetchone()[0] is not None  # type: ignore[index]

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create the stage table unless it exists (it may hold an earlier attempt's rows: kept)."""
        if self.exists(conn):
            self._note(conn, committed_at=None)  # a new attempt: not committed until it commits
            return
        t = self.target
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('sluice ddl'))")
            if self.exists(conn):
                return
            conn.execute(f"CREATE TABLE {self.qualified} (LIKE {t.qualified} INCLUDING DEFAULTS INCLUDING "
                         "CONSTRAINTS INCLUDING GENERATED INCLUDING IDENTITY)")
            conn.execute(f"ALTER TABLE {self.qualified} ADD COLUMN _sluice_partition text NOT NULL, "
                         "ADD COLUMN _sluice_seq bigint NOT NULL, ADD COLUMN _sluice_row integer NOT NULL")
            for u in t.unique:  # refuse duplicates within the run when they are loaded, not at commit
                m = INDEX_DEF.match(u.definition)
                if m:
                    conn.execute(f"CREATE UNIQUE INDEX ON {self.qualified} {m.group(1)}")
            for _, definition in t.foreign_keys:
                conn.execute(f"ALTER TABLE {self.qualified} ADD {definition}")
            self._note(conn, committed_at=None)

    def _note(self, conn: psycopg.Connection[Any], committed_at: str | None) -> None:
        note = {"sluice": "replace_interval stage", "job": self.job, "run_id": self.run_id,
                "target": self.target.label, "committed_at": committed_at}
        text = orjson.dumps(note).decode().replace("'", "''")
        conn.execute(f"COMMENT ON TABLE {self.qualified} IS '{text}'")

    def require(self, conn: psycopg.Connection[Any]) -> None:
        if not self.exists(conn):
            raise StageGone(f"postgres: replace_interval: the stage table {self.schema}.{self.name} of run "
                            f"{self.run_id!r} into {self.target.label} is gone (dropped after stage_retention, or "
                            "the run's prepare/plan never ran): run the whole interval again; "
                            f"{self.target.label} was left as it was")

    def clear_from(self, cur: psycopg.Cursor[Any], partition: str, seq: int) -> None:
        """Remove ``partition``'s staged rows from batch ``seq`` on."""
        cur.execute(f"DELETE FROM {self.qualified} WHERE _sluice_partition = %s AND _sluice_seq >= %s",
                    (partition, seq))

    def publish(self, conn: psycopg.Connection[Any], columns: list[str], time_column: str, start: datetime,
                end: datetime, partitions: tuple[str, ...] | None) -> tuple[int, int]:
        """Swap the interval in one transaction; returns (rows deleted, rows inserted)."""
        t = self.target
        cast = t.columns[time_column].type
        cols = ", ".join(ident(c) for c in columns)
        tc = ident(time_column)
        with conn.transaction():
            self.require(conn)
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sluice publish {t.label}",))
            deleted = conn.execute(f"DELETE FROM {t.qualified} WHERE {tc} >= %s::{cast} AND {tc} < %s::{cast}",
                                   (start.isoformat(), end.isoformat())).rowcount
            chosen = "" if partitions is None else " WHERE _sluice_partition = ANY(%s::text[])"
            params = () if partitions is None else (array_literal(list(partitions)),)
            inserted = conn.execute(f"INSERT INTO {t.qualified} ({cols}) SELECT {cols} FROM {self.qualified}"
                                    f"{chosen}", params).rowcount
            self._note(conn, committed_at=datetime.now(UTC).isoformat())
        return deleted, inserted

    def sweep(self, conn: psycopg.Connection[Any], ledger: Ledger, retention: timedelta) -> list[str]:
        """Drop the stage tables of this job and target committed more than ``retention`` ago
        (this run's too when the retention is 0), with their checkpoint rows; returns their runs."""
        rows = conn.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
            "AND c.relname LIKE %s", (self.schema, PREFIX + "%")).fetchall()
        now = datetime.now(UTC)
        dropped = []
        for name, comment in rows:
            try:
                note = orjson.loads(comment or "{}")
            except orjson.JSONDecodeError:
                continue
            if note.get("job") != self.job or note.get("target") != self.target.label or not note.get("committed_at"):
                continue
            if now - datetime.fromisoformat(note["committed_at"]) < retention:
                continue
            with conn.transaction():
                conn.execute(f"DROP TABLE IF EXISTS {ident(self.schema)}.{ident(name)}")
                with conn.cursor() as cur:
                    ledger.forget_run(cur, str(note.get("run_id")))
            dropped.append(str(note.get("run_id")))
        return dropped
