"""The PostgreSQL sink: COPY in batches, one transaction per batch, its checkpoint row included.

How it meets the two-phase sink contract (``sluice.Sink``), mode by mode:

- ``prepare`` creates what must exist (the table with ``create_table``, ``sluice_checkpoints``,
  the run's stage table for ``replace_interval``) and never removes a row.
- ``write`` loads one batch in one transaction: its rows, and its row in ``sluice_checkpoints``.
  A batch the ledger already holds for this run (a retry whose commit did get through, or a
  ``--resume`` that reads again a batch committed just before a kill) is not loaded again: its
  outcome is given back as it was, dead letters included.
- ``start_partition(key, seq)``: ``upsert`` rewrites (the key overwrites), so the ledger forgets the
  partition's batches from ``seq`` on; ``replace_interval`` also deletes their staged rows;
  ``append`` cannot tell its rows apart in the table, so it keeps the batches it holds and skips
  them when they come again (the same batch of the same run: same records, same checkpoint; a
  batch that comes back different fails the partition rather than load twice).
- ``commit``: ``replace_interval`` deletes the interval's rows and inserts the staged rows of the
  run's partitions in one transaction; ``append`` and ``upsert`` made each batch visible as it
  committed. Nothing is kept in the instance: a fresh one in another process commits the same.
- ``abort`` changes nothing: the target keeps what committed batches wrote (``replace_interval``:
  the target is untouched, the staged rows wait for a resume).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from sluice import Batch, ConfigError, PermanentError, RunContext, Sink, SinkRun, WriteResult

from . import columns as cols
from .catalog import Table, current_schema, find_table, ident, split_name
from .config import ColumnSpec, PgSinkConfig
from .connection import Connector, Pool, classify
from .ledger import Ledger, Loaded
from .load import Loader, Target
from .stage import Stage

TIME_TYPES = {"timestamp with time zone", "timestamp without time zone", "date"}


class ChangedInput(PermanentError):
    """A batch the table already holds for this run came back with other records."""


class PostgresSink(Sink):
    """Loads records into a PostgreSQL table by COPY: append, upsert by key, or replace the run's
    interval; each batch commits with its checkpoint row, so a kill and ``--resume`` load every
    row exactly once, with or without a key."""

    type = "postgres"
    aliases = ("postgresql",)
    Config = PgSinkConfig
    config: PgSinkConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        cfg = self.config
        self.log = ctx.logger(self.type)
        self.connector = Connector(cfg, ctx)
        self.pool = Pool(self.connector)
        self._lock = threading.Lock()
        self.table: Table | None = None
        self.loader: Loader | None = None
        self.label = f"postgres sink, table {cfg.table}"
        try:
            self._open()
        except BaseException:
            self.pool.close()  # the engine closes only what opened
            raise

    def _open(self) -> None:
        cfg = self.config
        with self.pool.connection() as conn:  # a down server or a refused login fails here, before any data
            self.defaults = conn.info.server_version >= 160000
            table = self._find(conn)
            self.new_schema = split_name(cfg.table)[0] or current_schema(conn)  # where create_table creates it
            self.schema = cfg.checkpoint_schema or (table.schema if table is not None else self.new_schema)
            if table is not None:
                self._use(conn, table)
            elif not cfg.create_table:
                raise ConfigError(f"{self.label}: table {cfg.table!r} does not exist at {self.connector.where} "
                                  "(create it, or set create_table: true with typed columns)")
            else:
                self._check_declared_types(conn)

    def describe(self) -> str:
        connector = getattr(self, "connector", None)
        return f"{connector.where if connector else 'postgres'} {self.config.table}"

    def _find(self, conn: Any) -> Table | None:
        try:
            return find_table(conn, self.config.table)
        except Exception as exc:
            raise classify(exc, f"looking up table {self.config.table}", self.connector.where) from None

    def _use(self, conn: Any, table: Table) -> None:
        """Check the job against the table and get ready to load it."""
        cfg, ctx = self.config, self.ctx
        self.table = table
        self.label = f"postgres sink, table {table.label}"
        mapped = cols.plan(cfg.columns, table)
        cols.check(mapped, table, self.label)
        self._check_types(conn, table, mapped)
        names = [m.column for m in mapped]
        update: list[str] = []
        problems = []
        if cfg.mode == "upsert":
            missing = [k for k in cfg.key if k not in names]
            if missing:
                problems.append(f"{self.label}: key column(s) {', '.join(missing)} must be loaded (map them)")
            elif table.unique_on(cfg.key) is None:
                problems.append(f"{self.label}: upsert on ({', '.join(cfg.key)}) needs a primary key or unique "
                                "index on exactly these columns; create one (create_table: true creates it)")
            update = [c for c in (cfg.update_columns if cfg.update_columns is not None else names) if c not in cfg.key]
            unknown = [c for c in update if c not in names]
            if unknown:
                problems.append(f"{self.label}: update_columns {', '.join(unknown)} are not loaded columns")
        stage = None
        if cfg.mode == "replace_interval":
            tc = cfg.time_column or ""
            column = table.columns.get(tc)
            if column is None or tc not in names:
                problems.append(f"{self.label}: time_column {tc!r} must be a loaded column of {table.label}")
            elif column.plain not in TIME_TYPES:
                problems.append(f"{self.label}: time_column {tc!r} is {column.type}; it must be timestamptz, "
                                "timestamp or date")
            stage = Stage(self.schema, table, ctx.job_name, ctx.run_id)
        if problems:
            raise ConfigError(problems[0], problems)
        builder = cols.RowBuilder(mapped, table, self.defaults)
        self.ledger = Ledger(self.schema, ctx.job_name, ctx.run_id, table.label)
        self.stage = stage
        self.loader = Loader(Target(cfg.mode, table, builder, self.defaults, list(cfg.key), update, cfg.time_column,
                                    ctx.interval.start, ctx.interval.end, stage))

    def _check_types(self, conn: Any, table: Table, mapped: list[cols.Mapped]) -> None:
        """Declared types must be the table's (modifiers aside)."""
        problems = []
        for m in mapped:
            if m.type is None or m.column not in table.columns:
                continue
            declared = self._type_name(conn, m.type)
            actual = table.columns[m.column].plain
            if declared != actual:
                problems.append(f"{self.label}: column {m.column!r} is {actual} in {table.label}, but the job "
                                f"declares {m.type}")
        if problems:
            raise ConfigError(problems[0], problems)

    def _check_declared_types(self, conn: Any) -> None:
        assert isinstance(self.config.columns, dict)
        for column, spec in self.config.columns.items():
            if isinstance(spec, ColumnSpec) and spec.type:
                self._type_name(conn, spec.type, column)

    def _type_name(self, conn: Any, declared: str, column: str = "") -> str:
        row = conn.execute("SELECT format_type(to_regtype(%s), NULL)", (declared,)).fetchone()
        if row is None or row[0] is None:
            raise ConfigError(f"{self.label}: {('column ' + repr(column) + ': ') if column else ''}unknown type "
                              f"{declared!r}")
        return str(row[0])

    # -- the run --------------------------------------------------------------------------------
    def prepare(self, run: SinkRun) -> None:
        """Create the table (``create_table``), ``sluice_checkpoints`` and the run's stage table."""
        with self.pool.connection() as conn:
            try:
                if self.table is None:
                    self._create_table(conn)
                assert self.loader is not None
                self.ledger.ensure(conn)
                if self.stage is not None:
                    self.stage.ensure(conn)
            except ConfigError:
                raise
            except Exception as exc:
                raise classify(exc, "preparing the load", self.connector.where) from None

    def _create_table(self, conn: Any) -> None:
        cfg = self.config
        assert isinstance(cfg.columns, dict)
        schema, name = split_name(cfg.table)
        qualified = f"{ident(self.new_schema)}.{ident(name)}"
        specs = {c: (s if isinstance(s, ColumnSpec) else ColumnSpec(field=s)) for c, s in cfg.columns.items()}
        body = ", ".join(f"{ident(c)} {s.type or 'jsonb'}{'' if s.nullable else ' NOT NULL'}" for c, s in specs.items())
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('sluice ddl'))")
            if schema and conn.execute("SELECT to_regnamespace(%s)", (ident(schema),)).fetchone()[0] is None:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")  # only when missing: needs CREATE
            conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified} ({body})")
            if cfg.mode == "upsert":
                key = ", ".join(ident(k) for k in cfg.key)
                conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {ident((name + '_sluice_key')[:63])} "
                             f"ON {qualified} ({key})")
        self.log.info("table created", table=qualified)
        table = self._find(conn)
        assert table is not None
        self._use(conn, table)

    def _ready(self) -> Loader:
        """The loader; a load task in another process finds the table its plan created."""
        if self.loader is None:
            with self._lock:
                if self.loader is None:
                    with self.pool.connection() as conn:
                        table = self._find(conn)
                        if table is None:
                            raise PermanentError(f"{self.label}: table {self.config.table!r} does not exist: "
                                                 "prepare (a staged run's plan) creates it")
                        self._use(conn, table)
        assert self.loader is not None
        return self.loader

    def start_partition(self, partition: str, seq: int) -> None:
        """Replace what an earlier attempt loaded for ``partition`` from batch ``seq`` on (``append``
        keeps it: those batches are skipped when they come again)."""
        self._ready()
        with self.pool.connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    if self.config.mode == "append":
                        held = self.ledger.loaded_from(cur, partition, seq)
                        if held:
                            self.log.info("batches already loaded are kept and skipped", partition=partition,
                                          from_batch=seq, batches=held)
                        return
                    if self.stage is not None:
                        self.stage.require(conn)
                        self.stage.clear_from(cur, partition, seq)
                    self.ledger.forget_from(cur, partition, seq)
            except PermanentError:
                raise
            except Exception as exc:
                raise classify(exc, f"starting partition {partition}", self.connector.where) from None

    def write(self, batch: Batch) -> WriteResult:
        loader = self._ready()
        records = batch.records
        with self.pool.connection() as conn:
            try:
                loader.ready(conn)
                with conn.transaction():
                    with conn.cursor() as cur:
                        loaded = self.ledger.lookup(cur, batch.partition, batch.seq)
                        if loaded is not None:
                            return self._again(batch, loaded)
                        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # deferred checks would fail the commit
                    written, dead = loader.load(conn, records, batch.partition, batch.seq)
                    with conn.cursor() as cur:
                        self.ledger.record(cur, batch.partition, batch.seq, batch.checkpoint, written, dead)
            except PermanentError:
                raise
            except Exception as exc:
                raise classify(exc, f"loading batch {batch.seq} of partition {batch.partition!r} into "
                                    f"{self.config.table}", self.connector.where) from None
        return WriteResult(written=written, dead_letters=[d for _, d in dead])

    def _again(self, batch: Batch, loaded: Loaded) -> WriteResult:
        """A batch the table already holds: the same outcome again, if it is the same batch."""
        now = orjson.loads(orjson.dumps(batch.checkpoint))
        if loaded.written + len(loaded.dead) != len(batch.records) or loaded.checkpoint != now:
            raise ChangedInput(
                f"{self.label}: batch {batch.seq} of partition {batch.partition!r} of run {self.ctx.run_id!r} was "
                f"loaded earlier from {loaded.written + len(loaded.dead)} records up to checkpoint "
                f"{loaded.checkpoint!r}; now it has {len(batch.records)} up to {now!r}. append never loads a batch "
                "twice: to load changed input, use mode upsert or replace_interval, or another --run-id")
        self.log.info("batch already loaded; not loaded again", partition=batch.partition, batch=batch.seq)
        return WriteResult(written=loaded.written, dead_letters=loaded.dead_letters(batch.records))

    def commit(self, run: SinkRun) -> None:
        """``replace_interval``: swap the interval in one transaction, from the stage table.
        ``append``/``upsert``: every batch is visible since it committed; nothing to do."""
        self._ready()
        with self.pool.connection() as conn:
            try:
                if self.stage is not None:
                    assert self.loader is not None and self.config.time_column
                    deleted, inserted = self.stage.publish(
                        conn, self.loader.t.builder.columns, self.config.time_column, self.ctx.interval.start,
                        self.ctx.interval.end, run.partitions)
                    self.log.info("interval replaced", table=self.config.table, deleted=deleted, inserted=inserted)
                    for run_id in self.stage.sweep(conn, self.ledger, self.config.stage_retention):
                        self.log.info("stage table dropped after its retention", run_id=run_id)
                elif run.partitions is not None:
                    with conn.cursor() as cur:
                        stale = sorted(set(self.ledger.partitions(cur)) - set(run.partitions))
                    if stale:
                        self.log.warning(f"{self.config.mode} cannot remove rows of partitions this run no longer "
                                         "has", partitions=stale[:20])
            except PermanentError:
                raise
            except Exception as exc:
                raise classify(exc, "committing the run", self.connector.where) from None

    def abort(self, run: SinkRun) -> None:
        """Nothing to withdraw: committed batches stay (``--resume`` continues after them);
        ``replace_interval`` never touched the target."""

    def close(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
