"""One batch into the table: COPY, the move into the target (or stage), and bad rows isolated.

Everything here runs inside the batch's transaction. Each attempt is a savepoint: COPY the rows
(straight into the target for ``append``; into a temporary table for ``upsert`` and
``replace_interval``, then ``INSERT ... SELECT`` into the target or the stage table). When an
attempt fails on a row's data (SQLSTATE classes 22 and 23, a trigger's ``RAISE``), the chunk is
split in halves and each is tried again, until the failing rows are alone: those become dead
letters with the SQLSTATE, the constraint and the column; every other row lands. Any other error
(a lost connection, a permission) ends the batch's transaction: nothing of it stays.

Text-format COPY is used throughout: JSON records bring most values as text (timestamps, numbers
in strings), the server converts them exactly as it converts SQL literals, and psycopg's C row
encoder made it as fast as binary COPY with the conversions done in Python (measured).
"""

from __future__ import annotations

import re
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sluice import DeadLetter

from .catalog import Table, ident
from .columns import DEFAULT_MARK, BadValue, RowBuilder
from .stage import Stage

if TYPE_CHECKING:
    import psycopg

ROW_STATES = {"P0001", "54000", "21000"}  # a trigger's RAISE, an index row too large, a row affected twice
COPY_COLUMN = re.compile(r"COPY [^,]+, line \d+, column (.+?): ")

Rows = list[tuple[int, list[Any]]]  # (index in the batch, COPY row)
Dead = list[tuple[int, DeadLetter]]


def is_row_error(exc: BaseException) -> bool:
    """An error caused by a row's data: retrying the other rows without it can succeed."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if state:
        return state[:2] in ("22", "23") or state in ROW_STATES
    # raised by psycopg before sending (a value it cannot adapt)
    return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError) and not isinstance(
        exc, psycopg.errors.UndefinedTable | psycopg.errors.InsufficientPrivilege)


def row_dead_letter(record: Any, exc: BaseException, table: str) -> DeadLetter:
    """A dead letter for a row the server refused: the message, SQLSTATE, constraint and column."""
    diag = getattr(exc, "diag", None)
    primary = (getattr(diag, "message_primary", None) or str(exc).splitlines()[0]) if diag else str(exc)
    detail = getattr(diag, "message_detail", None) if diag else None
    column = getattr(diag, "column_name", None) if diag else None
    if column is None and diag is not None and diag.context:
        match = COPY_COLUMN.search(diag.context)
        column = match.group(1) if match else None
    context = {"sqlstate": getattr(exc, "sqlstate", None), "constraint": getattr(diag, "constraint_name", None),
               "column": column, "table": table}
    reason = f"{primary}: {detail}" if detail else primary
    return DeadLetter(record, reason, type(exc).__name__, context)


@dataclass
class Target:
    """Where a batch's rows go and how, fixed when the sink opens."""

    mode: str
    table: Table
    builder: RowBuilder
    defaults: bool  # COPY's DEFAULT option (PostgreSQL 16+)
    key: list[str]
    update_columns: list[str]
    time_column: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    stage: Stage | None = None


class BatchRows:
    """A batch's COPY rows, built once: while the first attempt sends them, or when a split needs them.
    A record whose value cannot be encoded here becomes a dead letter at once."""

    def __init__(self, builder: RowBuilder, records: list[dict[str, Any]], indexed: bool, table: str,
                 dead: Dead) -> None:
        self.builder, self.records, self.indexed, self.table, self.dead = builder, records, indexed, table, dead
        self.rows: Rows = []
        self.done = 0  # records looked at so far

    def feed(self, write: Callable[[Any], None]) -> None:
        """Build every row not built yet and ``write`` each (the first attempt)."""
        for _, row in self._build():
            write(row)

    def built(self) -> Rows:
        """Every row (finishing what the first attempt did not reach)."""
        for _ in self._build():
            pass
        return self.rows

    def _build(self) -> Iterator[tuple[int, list[Any]]]:
        row_of, rows, records = self.builder.row, self.rows, self.records
        while self.done < len(records):
            i = self.done
            self.done += 1
            try:
                row = row_of(records[i])
            except BadValue as exc:
                self.dead.append((i, DeadLetter(records[i], str(exc), "InvalidValue", {
                    "sqlstate": None, "constraint": None, "column": exc.column, "table": self.table})))
                continue
            if self.indexed:
                row.append(i)
            rows.append((i, row))
            yield i, row


class Loader:
    """Loads batches into one target; one instance serves every connection of a sink."""

    def __init__(self, target: Target) -> None:
        self.t = target
        t = target
        self.temp = None if t.mode == "append" else f"sluice_tmp_{t.table.oid}"
        self._has_temp: weakref.WeakSet[Any] = weakref.WeakSet()  # connections that created it
        cols = t.builder.column_list()
        uses_default = t.defaults and any(t.table.columns[c].has_default for c in t.builder.columns)
        options = f" WITH (DEFAULT '{DEFAULT_MARK}')" if uses_default else ""
        if self.temp is None:
            self.copy_sql = f"COPY {t.table.qualified} ({cols}) FROM STDIN{options}"
        else:
            self.copy_sql = f"COPY {self.temp} ({cols}, _sluice_row) FROM STDIN{options}"
        self.move_sql = ""
        self.checks: list[tuple[str, str, dict[str, Any]]] = []  # (sql, reason, context)
        if t.mode == "upsert":
            key = ", ".join(ident(k) for k in t.key)
            action = ("DO NOTHING" if not t.update_columns else "DO UPDATE SET " + ", ".join(
                f"{ident(c)} = EXCLUDED.{ident(c)}" for c in t.update_columns))
            # the last record of a key in the batch wins, as if each were applied in turn
            self.move_sql = (f"INSERT INTO {t.table.qualified} ({cols}) SELECT DISTINCT ON ({key}) {cols} "
                             f"FROM {self.temp} ORDER BY {key}, _sluice_row DESC ON CONFLICT ({key}) {action}")
        elif t.mode == "replace_interval":
            assert t.stage is not None and t.time_column is not None
            self.move_sql = (f"INSERT INTO {t.stage.qualified} ({cols}, _sluice_partition, _sluice_seq, _sluice_row) "
                             f"SELECT {cols}, %s, %s, _sluice_row FROM {self.temp}")
            self._interval_checks()

    def _interval_checks(self) -> None:
        """Rows a replace could not keep exactly once: outside the interval (a re-run would not
        delete them), or clashing on a unique key with a row outside the interval."""
        t = self.t
        assert t.time_column is not None and t.start is not None and t.end is not None
        tc, cast = ident(t.time_column), t.table.columns[t.time_column].type
        start, end = t.start.isoformat(), t.end.isoformat()
        outside = f"{{a}}{tc} IS NULL OR {{a}}{tc} < '{start}'::{cast} OR {{a}}{tc} >= '{end}'::{cast}"
        self.checks.append((
            f"DELETE FROM {self.temp} WHERE {outside.format(a='')} RETURNING _sluice_row, {tc}::text",
            f"{t.time_column} {{value}} is outside the run's interval [{start}, {end}): replace_interval only "
            "loads rows of the interval it replaces", {"sqlstate": None, "constraint": None, "column": t.time_column}))
        mapped = set(t.builder.columns)
        for u in t.table.unique:
            if not u.simple or not set(u.columns) <= mapped:
                continue
            same = " AND ".join(f"o.{ident(c)} = s.{ident(c)}" for c in u.columns)
            self.checks.append((
                f"DELETE FROM {self.temp} s USING {t.table.qualified} o WHERE {same} AND "
                f"({outside.format(a='o.')}) RETURNING s._sluice_row, NULL",
                f"duplicate key value violates unique constraint \"{u.name}\": a row outside the run's interval "
                f"holds the same ({', '.join(u.columns)})",
                {"sqlstate": "23505", "constraint": u.name, "column": ", ".join(u.columns)}))

    # -- one batch --------------------------------------------------------------------------------
    def load(self, conn: psycopg.Connection[Any], records: list[dict[str, Any]], partition: str,
             seq: int) -> tuple[int, Dead]:
        """Load ``records`` inside the caller's transaction; returns (rows written, dead letters).

        The first attempt builds each row as it sends it, so the server parses while the next rows
        are built; the rows are kept for the smaller attempts a bad row calls for."""
        import psycopg

        label = self.t.table.label
        dead: Dead = []
        rows = BatchRows(self.t.builder, records, self.temp is not None, label, dead)
        todo: deque[Rows | None] = deque([None])  # None: every record, rows built on the way
        while todo:
            chunk = todo.popleft()
            try:
                dead.extend(self._attempt(conn, rows.feed if chunk is None else chunk, records, partition, seq))
            except psycopg.Error as exc:
                if not is_row_error(exc):
                    raise
                if chunk is None:
                    chunk = rows.built()
                if len(chunk) == 1:
                    dead.append((chunk[0][0], row_dead_letter(records[chunk[0][0]], exc, label)))
                elif chunk:  # halves, in order, so that upserts still apply in the batch's order
                    half = len(chunk) // 2
                    todo.appendleft(chunk[half:])
                    todo.appendleft(chunk[:half])
        dead.sort(key=lambda d: d[0])
        return len(records) - len(dead), dead

    def _attempt(self, conn: psycopg.Connection[Any], chunk: Rows | Callable[[Callable[[Any], None]], None],
                 records: list[dict[str, Any]], partition: str, seq: int) -> Dead:
        dead: Dead = []
        with conn.transaction(), conn.cursor() as cur:  # a savepoint: a failed attempt leaves nothing
            if self.temp is not None:
                cur.execute(f"TRUNCATE {self.temp}")
            with cur.copy(self.copy_sql) as copy:
                write = copy.write_row
                if callable(chunk):
                    chunk(write)
                else:
                    for _, row in chunk:
                        write(row)
            for sql, reason, context in self.checks:
                for index, value in cur.execute(sql).fetchall():
                    dead.append((index, DeadLetter(records[index], reason.format(value=value), "ConstraintViolation",
                                                   {**context, "table": self.t.table.label})))
            if self.move_sql:
                cur.execute(self.move_sql, (partition, seq) if self.t.mode == "replace_interval" else None)
        return dead

    def ready(self, conn: psycopg.Connection[Any]) -> None:
        """Create the connection's temporary table (shaped like the target, plus the row's index)
        once, outside any batch's transaction (a rolled-back batch must not take it along)."""
        if self.temp is None or conn in self._has_temp:
            return
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {self.temp} (LIKE {self.t.table.qualified} INCLUDING "
                     "DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY, _sluice_row integer NOT NULL)")
        self._has_temp.add(conn)
