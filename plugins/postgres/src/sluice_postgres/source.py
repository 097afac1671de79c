"""The PostgreSQL source: a table or a query, read in key ranges through server-side cursors.

- **Partitions**: one (``all``), or ``partitions: N`` ranges of ``partition_by`` (numbers, dates
  and times split evenly between the column's min and max; other types at quantiles). Rows whose
  ``partition_by`` is NULL belong to the last range.
- **Pages**: each partition runs one statement in a ``REPEATABLE READ READ ONLY`` transaction
  through a named (server-side) cursor; each ``FETCH`` of ``runtime.batch_size`` rows is a batch.
- **Checkpoints** are keyset positions: ``{"after": [last key, as text]}``, so ``--resume``
  continues mid-partition with ``WHERE (key) > (...)``. A query without ``key`` resumes by row
  count (``{"skip": n}``), which needs a deterministic ORDER BY. A dropped connection reconnects
  and continues after the last page delivered.
- **Types** become JSON on the server, losslessly (``to_json`` of a projection made per type):
  numeric → exact strings (or numbers), timestamps → ISO 8601 with the zone (naive ones read as
  UTC), uuid → string, bytea → base64, arrays → lists, json/jsonb → nested values, interval →
  ISO 8601 durations, NaN/Infinity → strings; the client only parses JSON (orjson).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sluice import Batch, ConfigError, Partition, PermanentError, RunContext, Source, TransientError

from .catalog import find_table, ident
from .columns import array_literal
from .config import PgSourceConfig
from .connection import Connector, classify


@dataclass(frozen=True)
class Col:
    """A column of what the source reads: its name, type name and category, and SQL type for casts."""

    name: str
    typname: str
    category: str
    sql_type: str


class PostgresSource(Source):
    """Reads a table or a query in parallel key ranges, page by page through server-side cursors,
    resuming mid-partition from the last key read; types map to JSON without loss."""

    type = "postgres"
    aliases = ("postgresql",)
    Config = PgSourceConfig
    config: PgSourceConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        cfg = self.config
        self.connector = Connector(cfg, ctx)
        self.label = f"postgres source, {('table ' + cfg.table) if cfg.table else 'query'}"
        conn = self.connector.connect()
        try:
            key = cfg.key
            if cfg.table is not None:
                table = find_table(conn, cfg.table)
                if table is None:
                    raise ConfigError(f"{self.label}: table {cfg.table!r} does not exist at {self.connector.where}")
                names = cfg.columns or list(table.columns)
                unknown = [c for c in names if c not in table.columns]
                if unknown:
                    raise ConfigError(f"{self.label}: no column(s) {', '.join(unknown)} in {table.label} "
                                      f"(its columns: {', '.join(table.columns)})")
                key = key or table.primary_key
                if not key:
                    raise ConfigError(f"{self.label}: {table.label} has no primary key: set key to columns that "
                                      "order its rows uniquely and are never NULL")
                fetched = list(dict.fromkeys([*names, *key, *([cfg.partition_by] if cfg.partition_by else [])]))
                self.base = f"SELECT {', '.join(ident(c) for c in fetched)} FROM {table.qualified}" + (
                    f" WHERE {cfg.where}" if cfg.where else "")
                self.shown = names
            else:
                self.base = (cfg.query or "").strip().rstrip(";")
                self.shown = []
            self.cols = self._describe(conn)
            if not self.shown:
                self.shown = list(self.cols)
        except (ConfigError, PermanentError, TransientError):
            conn.close()
            raise
        except Exception as exc:
            conn.close()
            raise classify(exc, "describing what to read", self.connector.where) from None
        conn.close()
        missing = [c for c in [*(key or []), *([cfg.partition_by] if cfg.partition_by else [])] if c not in self.cols]
        if missing:
            raise ConfigError(f"{self.label}: key/partition_by column(s) {', '.join(missing)} are not read "
                              f"(columns: {', '.join(self.cols)})")
        self.key = list(key or [])

    def describe(self) -> str:
        connector = getattr(self, "connector", None)
        return f"{connector.where if connector else 'postgres'} {self.config.table or 'query'}"

    def _describe(self, conn: Any) -> dict[str, Col]:
        cur = conn.execute(f"SELECT * FROM ({self.base}) b LIMIT 0")
        oids = [d.type_code for d in cur.description or []]
        types = {r[0]: r[1:] for r in conn.execute(
            "SELECT t.oid, COALESCE(bt.typname, t.typname), COALESCE(bt.typcategory, t.typcategory), "
            "format_type(COALESCE(bt.oid, t.oid), NULL) FROM pg_type t LEFT JOIN pg_type bt "
            "ON bt.oid = t.typbasetype AND t.typtype = 'd' WHERE t.oid = ANY(%s::oid[])", (array_literal(oids),))}
        out: dict[str, Col] = {}
        for d in cur.description or []:
            if d.name in out:
                raise ConfigError(f"{self.label}: the column name {d.name!r} appears twice; alias one of them")
            typname, category, sql_type = types.get(d.type_code, ("text", "S", "text"))
            out[d.name] = Col(d.name, typname, category, sql_type)
        return out

    # -- SQL ----------------------------------------------------------------------------------------
    def _projection(self) -> str:
        """Each column as an expression whose to_json is lossless (see the module docstring)."""
        exprs = []
        exact = self.config.numeric == "string"
        for name in self.shown:
            col, c = self.cols[name], f"b.{ident(name)}"
            if col.typname == "numeric" and exact:
                expr = f"{c}::text"
            elif col.typname == "_numeric" and exact:
                expr = f"{c}::text[]"
            elif col.typname == "timestamp":
                expr = f"{c} AT TIME ZONE 'UTC'"
            elif col.typname == "bytea":
                expr = f"translate(encode({c}, 'base64'), E'\\n', '')"
            elif col.typname == "_bytea":
                expr = f"ARRAY(SELECT translate(encode(x, 'base64'), E'\\n', '') FROM unnest({c}) x)"
            else:
                expr = c
            exprs.append(f"{expr} AS {ident(name)}")
        return ", ".join(exprs)

    def _statement(self, spec: dict[str, Any], position: dict[str, Any] | None) -> tuple[str, list[Any]]:
        conds, params = self._range(spec)
        key_cols = ", ".join(f"b.{ident(k)}" for k in self.key)
        if self.key and position and position.get("after") is not None:
            casts = ", ".join(f"%s::{self.cols[k].sql_type}" for k in self.key)
            conds.append(f"({key_cols}) > ({casts})")
            params.extend(position["after"])
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        keys = "".join(f", b.{ident(k)}::text" for k in self.key)
        sql = (f"SELECT to_json(p)::text{keys} FROM ({self.base}) b CROSS JOIN LATERAL (SELECT "
               f"{self._projection()}) p{where}")
        if self.key:
            sql += f" ORDER BY {key_cols}"
        elif position and position.get("skip"):
            sql += f" OFFSET {int(position['skip'])}"
        return sql, params

    def _range(self, spec: dict[str, Any]) -> tuple[list[str], list[Any]]:
        pb = self.config.partition_by
        if pb is None or not spec:
            return [], []
        if spec.get("empty"):
            return ["false"], []
        col, conds, params = f"b.{ident(pb)}", [], []
        cast = self.cols[pb].sql_type
        if spec.get("lo") is not None:
            conds.append(f"{col} >= %s::{cast}")
            params.append(spec["lo"])
        if spec.get("hi") is not None:
            conds.append(f"{col} < %s::{cast}")
            params.append(spec["hi"])
        inside = " AND ".join(conds) or "true"
        if spec.get("nulls"):
            return [f"({inside} OR {col} IS NULL)"], params
        return [inside], params

    # -- partitions ---------------------------------------------------------------------------------
    def partitions(self) -> list[Partition]:
        cfg = self.config
        if not cfg.partition_by:
            return [Partition("all", {})]
        n = cfg.partitions
        bounds = self._bounds(n) if n > 1 else []
        out = []
        for i in range(n):
            key = f"range-{i + 1:03d}-of-{n:03d}"
            if bounds is None:  # no value but NULL: the last range reads everything, the others nothing
                out.append(Partition(key, {"nulls": True} if i == n - 1 else {"empty": True}))
                continue
            lo = bounds[i - 1] if i > 0 else None
            hi = bounds[i] if i < n - 1 else None
            out.append(Partition(key, {"lo": lo, "hi": hi, "nulls": i == n - 1}))
        return out

    def _bounds(self, n: int) -> list[str] | None:
        """The n-1 inner bounds of ``partition_by``, as text; None when it holds no value."""
        pb = self.config.partition_by
        assert pb is not None
        col = self.cols[pb]
        c = f"b.{ident(pb)}"
        steps = range(1, n)
        if col.category == "N":
            exprs = [f"(min({c})::numeric + (max({c})::numeric - min({c})::numeric) * {i} / {n})::{col.sql_type}::text"
                     for i in steps]
        elif col.typname == "date":
            exprs = [f"(min({c}) + (max({c}) - min({c})) * {i} / {n})::text" for i in steps]
        elif col.category == "D":
            exprs = [f"(min({c}) + (max({c}) - min({c})) * ({i}::float8 / {n}))::{col.sql_type}::text" for i in steps]
        else:
            fractions = ", ".join(f"{i}::float8 / {n}" for i in steps)
            exprs = [f"(percentile_disc(ARRAY[{fractions}]) WITHIN GROUP (ORDER BY {c}))::text[]"]
        sql = f"SELECT count({c}), {', '.join(exprs)} FROM ({self.base}) b"
        conn = self.connector.connect()
        try:
            row = conn.execute(sql).fetchone()
        except Exception as exc:
            raise classify(exc, f"finding the ranges of {pb}", self.connector.where) from None
        finally:
            conn.close()
        assert row is not None
        if not row[0]:
            return None
        if col.category not in ("N", "D"):
            return list(row[1])
        return list(row[1:])

    # -- reading ------------------------------------------------------------------------------------
    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        spec = partition.spec
        position: dict[str, Any] | None = dict(checkpoint) if checkpoint else None
        span = [spec.get("lo"), spec.get("hi")] if self.config.partition_by else None
        if position and span is not None and position.get("range") not in (None, span):
            raise PermanentError(f"{self.label}: partition {partition.key} covered {position['range']} when its "
                                 f"checkpoint was saved, {span} now (rows were added or removed); run the interval "
                                 "again without --resume")
        if position and self.key and "after" not in position:
            raise PermanentError(f"{self.label}: checkpoint {checkpoint!r} of {partition.key} was not written by a "
                                 "keyset read (the key changed?); run the interval again without --resume")
        policy, failures, started = self.ctx.retry, 0, time.monotonic()
        while True:
            try:
                for batch in self._pages(spec, position, span):
                    position, failures = batch.checkpoint, 0
                    yield batch
                return
            except TransientError as exc:  # a dropped connection: reconnect, go on after the last page
                failures += 1
                if failures >= policy.attempts or time.monotonic() - started > policy.max_time_s:
                    raise
                self.ctx.metrics.add("retries")
                self.ctx.logger(self.type).warning("read failed; retrying", partition=partition.key, error=str(exc))
                time.sleep(min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (failures - 1)))

    def _pages(self, spec: dict[str, Any], position: dict[str, Any] | None,
               span: list[Any] | None) -> Iterator[Batch]:
        sql, params = self._statement(spec, position)
        size = self.ctx.runtime.batch_size
        skipped = int((position or {}).get("skip", 0))
        nkeys = len(self.key)
        loads = orjson.loads
        conn = self.connector.connect(retry=False)  # read() retries the whole page stream
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                with conn.cursor(name="sluice_read") as cur:
                    cur.execute(sql, params)
                    while True:
                        rows = cur.fetchmany(size)
                        if not rows:
                            break
                        records = [loads(r[0]) for r in rows]
                        if nkeys:
                            mark: dict[str, Any] = {"after": list(rows[-1][1:])}
                        else:
                            skipped += len(rows)
                            mark = {"skip": skipped}
                        if span is not None:
                            mark["range"] = span
                        yield Batch(records, checkpoint=mark)
        except (TransientError, PermanentError):
            raise
        except Exception as exc:
            import psycopg

            if isinstance(exc, psycopg.Error):
                raise classify(exc, f"reading {self.config.table or 'the query'}", self.connector.where) from None
            raise
        finally:
            conn.close()
