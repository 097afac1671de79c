"""``sluice_checkpoints``: which batches of which run the table already holds, committed in the same
transaction as their rows.

One row per loaded batch: (job, run_id, target, partition, seq) → the source checkpoint after it,
how many rows it wrote and which of its records became dead letters (index, reason, SQLSTATE...).
A row exists exactly when the batch's rows are in the table (or, for ``replace_interval``, in the
run's stage table): a crash can never leave one without the other. So a batch loaded again — the
engine's own checkpoint is saved just after the commit, and a kill in between makes ``--resume``
read that batch once more — is recognised and not loaded twice, and its dead letters are given back
as they were the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluice import DeadLetter

from .catalog import ident

if TYPE_CHECKING:
    import psycopg

TABLE = "sluice_checkpoints"


@dataclass(frozen=True)
class Loaded:
    """What a batch loaded earlier wrote."""

    checkpoint: Any
    written: int
    dead: list[dict[str, Any]]

    def dead_letters(self, records: list[dict[str, Any]]) -> list[DeadLetter]:
        """The batch's dead letters again, for the same records."""
        return [DeadLetter(records[d["i"]], d["reason"], d["error_type"], d.get("context") or {}) for d in self.dead]


class Ledger:
    """The checkpoint rows of one (job, run, target table)."""

    def __init__(self, schema: str, job: str, run_id: str, target: str) -> None:
        self.schema = schema
        self.table = f"{ident(schema)}.{TABLE}"
        self.key = (job, run_id, target)

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        """Create the table (and its schema) when missing; concurrent callers wait for one another."""
        if conn.execute("SELECT to_regclass(%s)", (self.table,)).fetchone()[0] is not None:  # type: ignore[index]
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('sluice ddl'))")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(self.schema)}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "job text NOT NULL, run_id text NOT NULL, target text NOT NULL, partition text NOT NULL, "
                "seq bigint NOT NULL, checkpoint jsonb, written integer NOT NULL, dead_letters jsonb, "
                "loaded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, run_id, target, partition, seq))")
            conn.execute(f"COMMENT ON TABLE {self.table} IS 'Sluice: one row per batch loaded, committed with "
                         "its rows (sluice-postgres exactly-once loads)'")

    def lookup(self, cur: psycopg.Cursor[Any], partition: str, seq: int) -> Loaded | None:
        row = cur.execute(f"SELECT checkpoint, written, dead_letters FROM {self.table} "
                          "WHERE job = %s AND run_id = %s AND target = %s AND partition = %s AND seq = %s",
                          (*self.key, partition, seq)).fetchone()
        return None if row is None else Loaded(row[0], int(row[1]), list(row[2] or []))

    def record(self, cur: psycopg.Cursor[Any], partition: str, seq: int, checkpoint: Any, written: int,
               dead: list[tuple[int, DeadLetter]]) -> None:
        from psycopg.types.json import Jsonb

        stored = [{"i": i, "reason": d.reason, "error_type": d.error_type, "context": d.context} for i, d in dead]
        cur.execute(f"INSERT INTO {self.table} (job, run_id, target, partition, seq, checkpoint, written, "
                    "dead_letters) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (*self.key, partition, seq, Jsonb(checkpoint), written, Jsonb(stored) if stored else None))

    def loaded_from(self, cur: psycopg.Cursor[Any], partition: str, seq: int) -> int:
        """How many batches of ``partition`` from ``seq`` on the table holds."""
        row = cur.execute(f"SELECT count(*) FROM {self.table} WHERE job = %s AND run_id = %s AND target = %s "
                          "AND partition = %s AND seq >= %s", (*self.key, partition, seq)).fetchone()
        return int(row[0]) if row else 0

    def forget_from(self, cur: psycopg.Cursor[Any], partition: str, seq: int) -> None:
        """Forget ``partition``'s batches from ``seq`` on (their rows are being replaced)."""
        cur.execute(f"DELETE FROM {self.table} WHERE job = %s AND run_id = %s AND target = %s AND partition = %s "
                    "AND seq >= %s", (*self.key, partition, seq))

    def forget_run(self, cur: psycopg.Cursor[Any], run_id: str) -> None:
        """Forget every batch of ``run_id`` (its stage table was dropped)."""
        cur.execute(f"DELETE FROM {self.table} WHERE job = %s AND run_id = %s AND target = %s",
                    (self.key[0], run_id, self.key[2]))

    def partitions(self, cur: psycopg.Cursor[Any]) -> list[str]:
        """The partitions this run loaded batches of."""
        return [r[0] for r in cur.execute(f"SELECT DISTINCT partition FROM {self.table} WHERE job = %s AND "
                                          "run_id = %s AND target = %s ORDER BY 1", self.key)]
