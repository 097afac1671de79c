"""The run history: every run records itself here, and ``sluice runs`` reads it back.

One row per attempt of a run (``sluice_runs``: job, interval, run id, status, counts, error rate,
duration, host, Sluice version, where the output and the dead letters went, the error) and one per
partition of it (``sluice_partitions``: key, status, counts, checkpoint, duration, error). The store
is a SQLite file by default (``.sluice/history.db``) or PostgreSQL by URL, chosen by
``$SLUICE_HISTORY`` (``off`` turns recording off). The schema is versioned: ``MIGRATIONS`` are
applied in order, once, under a lock, and a store migrated by a newer Sluice is refused.

A staged run's steps may end in several processes: a step that fails records (or updates) an open
attempt of the run, marked failed; ``finalize`` then completes that attempt with the run's counts.
"""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from .errors import SluiceError

HISTORY_ENV = "SLUICE_HISTORY"
DEFAULT_HISTORY = ".sluice/history.db"
OFF = frozenset({"off", "none", "false", "0"})

Mode = Literal["attempt", "step_failed", "finalize"]


class HistoryError(SluiceError):
    """The history store cannot be opened or read."""


@dataclass
class PartitionRecord:
    """One partition of a recorded run. Counts are None where the run did not keep them per partition."""

    key: str
    status: str  # done | failed | not finished
    read: int | None = None
    written: int | None = None
    filtered: int | None = None
    dead_lettered: int | None = None
    duration_s: float | None = None
    checkpoint: Any = None
    error: str | None = None

    @property
    def records_per_s(self) -> float | None:
        """Records the partition read (else wrote) per second of its work; None when unknown."""
        n = self.read if self.read is not None else self.written
        if n is None or not self.duration_s:
            return None
        return n / self.duration_s


@dataclass
class RunRecord:
    """One attempt of a run, as the history keeps it."""

    job: str
    run_id: str
    kind: str  # run (sluice run, in one process) | staged (steps, any orchestrator)
    status: str
    finished_at: datetime
    interval_start: datetime | None = None
    interval_end: datetime | None = None
    started_at: datetime | None = None
    duration_s: float | None = None
    resumed: bool = False
    finalized: bool = True  # a staged attempt stays open (False) until its finalize records it
    read: int = 0
    written: int = 0
    created: int = 0
    filtered: int = 0
    dead_lettered: int = 0
    retries: int = 0
    retries_by: dict[str, int] = field(default_factory=dict)  # by component: source, destination, ...
    filtered_by: dict[str, int] = field(default_factory=dict)
    dead_lettered_by: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    error_rate: float = 0.0
    error_rate_threshold: float = 0.0
    partitions: int = 0
    partitions_done: int = 0
    host: str = ""
    sluice_version: str = ""
    destination: str | None = None
    dead_letters: str | None = None
    error: str | None = None
    id: int | None = None
    attempt: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("finished_at", "started_at", "interval_start", "interval_end"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out


_JSON = ("filtered_by", "dead_lettered_by", "counters", "retries_by")
_TIMES = ("finished_at", "started_at", "interval_start", "interval_end")
_RUN_COLUMNS = [f.name for f in fields(RunRecord) if f.name not in ("id", "attempt")]
_PART_COLUMNS = [f.name for f in fields(PartitionRecord)]

# -- schema -----------------------------------------------------------------------------------
_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "ts": "TEXT", "real": "REAL", "bool": "INTEGER",
               "int": "INTEGER"},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "ts": "TIMESTAMPTZ", "real": "DOUBLE PRECISION",
                   "bool": "BOOLEAN", "int": "BIGINT"},
}

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "runs and partitions", [
        """CREATE TABLE sluice_runs (
            id {id},
            job TEXT NOT NULL,
            run_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            resumed {bool} NOT NULL,
            finalized {bool} NOT NULL,
            interval_start {ts},
            interval_end {ts},
            started_at {ts},
            finished_at {ts} NOT NULL,
            duration_s {real},
            read {int} NOT NULL,
            written {int} NOT NULL,
            created {int} NOT NULL,
            filtered {int} NOT NULL,
            dead_lettered {int} NOT NULL,
            retries {int} NOT NULL,
            filtered_by TEXT NOT NULL,
            dead_lettered_by TEXT NOT NULL,
            counters TEXT NOT NULL,
            error_rate {real} NOT NULL,
            error_rate_threshold {real} NOT NULL,
            partitions INTEGER NOT NULL,
            partitions_done INTEGER NOT NULL,
            host TEXT NOT NULL,
            sluice_version TEXT NOT NULL,
            destination TEXT,
            dead_letters TEXT,
            error TEXT,
            UNIQUE (job, run_id, attempt)
        )""",
        """CREATE TABLE sluice_partitions (
            run {int} NOT NULL REFERENCES sluice_runs (id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            status TEXT NOT NULL,
            read {int},
            written {int},
            filtered {int},
            dead_lettered {int},
            duration_s {real},
            checkpoint TEXT,
            error TEXT,
            PRIMARY KEY (run, key)
        )""",
    ]),
    (2, "indexes for sluice runs --job, --since and show", [
        "CREATE INDEX sluice_runs_job_finished ON sluice_runs (job, finished_at)",
        "CREATE INDEX sluice_runs_finished ON sluice_runs (finished_at)",
        "CREATE INDEX sluice_runs_run_id ON sluice_runs (run_id)",
    ]),
    (3, "retries by component", [  # braces doubled: statements go through str.format
        "ALTER TABLE sluice_runs ADD COLUMN retries_by TEXT NOT NULL DEFAULT '{{}}'",
    ]),
]
LATEST = MIGRATIONS[-1][0]


def location() -> str:
    """Where runs are recorded: ``$SLUICE_HISTORY``, else ``.sluice/history.db``."""
    import os

    return os.environ.get(HISTORY_ENV, "").strip() or DEFAULT_HISTORY


def describe(where: str) -> str:
    """``where`` for messages, without a password."""
    if "://" not in where:
        return where
    parts = urllib.parse.urlsplit(where)
    if parts.password is None:
        return where
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# -- the two databases --------------------------------------------------------------------------
class _Db:
    """A connection to SQLite or PostgreSQL behind one small interface (``?`` placeholders)."""

    def __init__(self, where: str) -> None:
        self.where = where
        if where.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            try:
                import psycopg
                from psycopg.rows import dict_row
            except ImportError:
                raise HistoryError(f"the run history at {describe(where)} is PostgreSQL, which needs psycopg "
                                   "(pip install 'psycopg[binary]')") from None
            self.conn: Any = psycopg.connect(where, autocommit=True, row_factory=dict_row, connect_timeout=5)
        else:
            self.dialect = "sqlite"
            path = Path(where.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA foreign_keys = ON")

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        cursor = self.conn.execute(sql, [self._param(p) for p in params])
        if cursor.description is None:
            return []
        return [dict(row) for row in cursor.fetchall()]

    def _param(self, value: Any) -> Any:
        if isinstance(value, datetime) and self.dialect == "sqlite":
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")  # sorts as text
        return value

    @contextlib.contextmanager
    def transaction(self, lock: str) -> Iterator[None]:
        """A transaction holding a write lock (SQLite) or the advisory lock ``lock`` (PostgreSQL)."""
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction():
                self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (lock,))
                yield

    def close(self) -> None:
        self.conn.close()


def _version(db: _Db) -> int:
    try:
        rows = db.execute("SELECT MAX(version) AS v FROM sluice_history_version")
    except Exception:
        return 0
    return int(rows[0]["v"] or 0)


def migrate(db: _Db, upto: int = LATEST) -> None:
    """Bring the store's schema to version ``upto``, applying each missing migration once."""
    if upto <= _version(db) <= LATEST:
        return
    with db.transaction("sluice_history_migrate"):
        db.execute("CREATE TABLE IF NOT EXISTS sluice_history_version (version INTEGER PRIMARY KEY, "
                   "description TEXT NOT NULL, applied_at TEXT NOT NULL)")
        current = _version(db)
        if current > LATEST:
            raise HistoryError(f"the run history at {describe(db.where)} has schema version {current}, newer than "
                               f"this Sluice knows ({LATEST}): upgrade Sluice to read or record runs there")
        for version, description, statements in MIGRATIONS:
            if current < version <= upto:
                for statement in statements:
                    db.execute(statement.format(**_TYPES[db.dialect]))
                db.execute("INSERT INTO sluice_history_version (version, description, applied_at) VALUES (?, ?, ?)",
                           (version, description, datetime.now(UTC).isoformat()))


# -- the store ----------------------------------------------------------------------------------
class HistoryStore:
    """Runs and their partitions in one SQLite file or PostgreSQL database."""

    def __init__(self, where: str | None = None) -> None:
        self.where = where or location()
        try:
            self.db = _Db(self.where)
            migrate(self.db)
        except HistoryError:
            raise
        except Exception as exc:
            raise HistoryError(f"cannot open the run history at {describe(self.where)}: "
                               f"{type(exc).__name__}: {exc}") from None

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # -- writing ------------------------------------------------------------------------------
    def record(self, run: RunRecord, partitions: list[PartitionRecord], mode: Mode = "attempt") -> int:
        """Record ``run``; returns its row id.

        ``attempt``: a new attempt of the run. ``step_failed``: mark the run's open staged attempt
        failed (or open one), adding the failed partitions. ``finalize``: complete the open staged
        attempt (or add one) with the run's counts, replacing its partitions.
        """
        with self.db.transaction(f"sluice_history:{run.job}:{run.run_id}"):
            latest = self._latest(run.job, run.run_id)
            open_attempt = latest if latest and latest["kind"] == "staged" and not latest["finalized"] else None
            if mode == "attempt" or open_attempt is None:
                attempt = (latest["attempt"] if latest else 0) + 1
                row = self._insert(run, attempt)
            elif mode == "step_failed":
                row = int(open_attempt["id"])
                error = open_attempt["error"] or run.error  # the first failure is the cause
                self.db.execute("UPDATE sluice_runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                                (run.status, run.finished_at, error, row))
            else:
                row = int(open_attempt["id"])
                self._update(run, row)
                self.db.execute("DELETE FROM sluice_partitions WHERE run = ?", (row,))
            for p in partitions:
                self._put_partition(row, p)
        return row

    def _latest(self, job: str, run_id: str) -> dict[str, Any] | None:
        rows = self.db.execute("SELECT id, attempt, kind, finalized, error FROM sluice_runs WHERE job = ? AND "
                               "run_id = ? ORDER BY attempt DESC LIMIT 1", (job, run_id))
        return rows[0] if rows else None

    def _values(self, run: RunRecord) -> list[Any]:
        return [orjson.dumps(getattr(run, c)).decode() if c in _JSON else getattr(run, c) for c in _RUN_COLUMNS]

    def _insert(self, run: RunRecord, attempt: int) -> int:
        columns = [*_RUN_COLUMNS, "attempt"]
        rows = self.db.execute(f"INSERT INTO sluice_runs ({', '.join(columns)}) VALUES "
                               f"({', '.join('?' * len(columns))}) RETURNING id", [*self._values(run), attempt])
        return int(rows[0]["id"])

    def _update(self, run: RunRecord, row: int) -> None:
        sets = ", ".join(f"{c} = ?" for c in _RUN_COLUMNS)
        self.db.execute(f"UPDATE sluice_runs SET {sets} WHERE id = ?", [*self._values(run), row])

    def _put_partition(self, row: int, p: PartitionRecord) -> None:
        checkpoint = None if p.checkpoint is None else orjson.dumps(p.checkpoint, default=str).decode()
        values = [checkpoint if c == "checkpoint" else getattr(p, c) for c in _PART_COLUMNS]
        updates = ", ".join(f"{c} = excluded.{c}" for c in _PART_COLUMNS if c != "key")
        self.db.execute(f"INSERT INTO sluice_partitions (run, {', '.join(_PART_COLUMNS)}) VALUES "
                        f"(?, {', '.join('?' * len(_PART_COLUMNS))}) ON CONFLICT (run, key) DO UPDATE SET {updates}",
                        [row, *values])

    # -- reading ------------------------------------------------------------------------------
    def runs(self, job: str | None = None, since: datetime | None = None, limit: int | None = 100) -> list[RunRecord]:
        """Attempts, the latest first; only ``job``'s and those finished since ``since`` when given."""
        where, params = [], []
        if job is not None:
            where.append("job = ?")
            params.append(job)
        if since is not None:
            where.append("finished_at >= ?")
            params.append(since)
        sql = "SELECT * FROM sluice_runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY finished_at DESC, id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return [self._run(r) for r in self.db.execute(sql, params)]

    def attempts(self, run_id: str, job: str | None = None) -> list[RunRecord]:
        """Every attempt of ``run_id`` (of ``job``), the latest first."""
        sql = "SELECT * FROM sluice_runs WHERE run_id = ?" + (" AND job = ?" if job else "")
        sql += " ORDER BY attempt DESC, id DESC"
        return [self._run(r) for r in self.db.execute(sql, (run_id, job) if job else (run_id,))]

    def last(self, job: str) -> RunRecord | None:
        """The job's latest attempt."""
        found = self.runs(job=job, limit=1)
        return found[0] if found else None

    def partitions(self, run: RunRecord) -> list[PartitionRecord]:
        rows = self.db.execute("SELECT * FROM sluice_partitions WHERE run = ? ORDER BY key", (run.id,))
        out = []
        for r in rows:
            r.pop("run")
            r["checkpoint"] = orjson.loads(r["checkpoint"]) if r["checkpoint"] is not None else None
            out.append(PartitionRecord(**r))
        return out

    def _run(self, row: dict[str, Any]) -> RunRecord:
        for key in _JSON:
            row[key] = orjson.loads(row[key])
        for key in _TIMES:
            if isinstance(row[key], str):
                row[key] = datetime.fromisoformat(row[key])
        row["resumed"], row["finalized"] = bool(row["resumed"]), bool(row["finalized"])
        return RunRecord(**row)


def record(run: RunRecord, partitions: list[PartitionRecord], mode: Mode = "attempt",
           where: str | None = None) -> int | None:
    """Record ``run`` in the history at ``where`` (default: ``location()``); None when it is off."""
    where = where or location()
    if where.lower() in OFF:
        return None
    with HistoryStore(where) as store:
        return store.record(run, partitions, mode)


__all__ = ["DEFAULT_HISTORY", "HISTORY_ENV", "MIGRATIONS", "HistoryError", "HistoryStore", "PartitionRecord",
           "RunRecord", "location", "record"]
