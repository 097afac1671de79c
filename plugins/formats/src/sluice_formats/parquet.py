"""Parquet (pyarrow): records to row groups, row groups back to records.

Writing: each batch becomes an Arrow table (its schema inferred, or the declared ``schema``); tables
are buffered until ``row_group_size`` rows (or ``row_group_bytes``) and written as one row group, so
memory per open file is one row group. A file's schema is fixed once its first row group is
written; before that it may still widen. Later records that need a wider schema start the next
file (``Rollover``) under ``schema_changes: widen``, or become dead letters naming the column and
both types under ``dead_letter``.

Reading: the footer first, then one row group at a time (with ``pre_buffer``: one ranged read per
row group on S3), decoded ``batch_size`` rows at a time. The position is ``{"row_group", "offset"}``
(rows of that row group already delivered).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal
from urllib.parse import unquote

import orjson
from pydantic import ConfigDict, Field, field_validator

from sluice import DeadLetter, PermanentError, SluiceError
from sluice.formats import Chunk, Format, FormatConfig, FormatWriter, Rollover, is_damage

from . import arrowtypes as at

MiB = 1 << 20
PARTITION_META = b"sluice.partition_columns"
MISSING = "__missing__"


class ParquetConfig(FormatConfig):
    """Parquet options: the writer's (row groups, compression, schema, nesting) and the reader's
    (``columns``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = Field(
        "zstd", description="Column compression inside the file: zstd (default), snappy, gzip, lz4, brotli or none."
    )
    compression_level: int | None = Field(None, description="Codec level (zstd 1-22, default 3; gzip 1-9).")
    row_group_size: int = Field(65_536, ge=1, description="Rows per row group (the unit a reader fetches and "
                                                         "decodes at once).")
    row_group_bytes: int = Field(32 * MiB, ge=1, description="A row group closes early once its rows take this "
                                                            "many bytes in memory (Arrow), bounding memory per "
                                                            "open file.")
    dictionary: bool | list[str] = Field(True, description="Dictionary encoding: true (every column), false, or "
                                                           "a list of columns.")
    schema_: dict[str, str] | None = Field(
        None, alias="schema",
        description="Declared columns and types ({name: type}; string, int64, float, bool, date, timestamp[ms, "
                    "tz=UTC], decimal(12, 2), list<string>, struct<a: int64>, json). Values are cast; one that "
                    "does not cast is a dead letter; fields not declared are not written. Default: inferred."
    )
    schema_changes: Literal["widen", "dead_letter"] = Field(
        "widen", description="Inferred schema, a record that does not fit it: widen (new columns, null to any "
                             "type, int to float, new struct fields; a conflict is a dead letter) or dead_letter "
                             "(the record, naming the column and both types)."
    )
    nested: Literal["struct", "flatten"] = Field(
        "struct", description="Nested objects as struct columns, or flattened into columns named a.b.c."
    )
    flatten_separator: str = Field(".", min_length=1, description="Joins names of flattened columns.")
    columns: list[str] | None = Field(
        None, description="Reading: only these columns (projection; nested fields as a.b). Default: all."
    )

    @field_validator("schema_")
    @classmethod
    def _types_parse(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            try:
                at.parse_type(text)
            except ValueError as exc:
                raise ValueError(f"column {name!r}: {exc}") from None
        return value


class ParquetFormat(Format):
    """Apache Parquet through pyarrow: columnar, compressed, typed; read row group by row group."""

    type = "parquet"
    Config = ParquetConfig
    config: ParquetConfig
    extension = ".parquet"
    suffixes = (".parquet", ".parq", ".pq")
    content_type = "application/vnd.apache.parquet"
    text = False

    def declared(self) -> Any:
        """The declared schema as a pyarrow schema, or None (inferred)."""
        import pyarrow as pa

        if self.config.schema_ is None:
            return None
        return pa.schema([pa.field(name, at.parse_type(text)) for name, text in self.config.schema_.items()])

    def json_columns(self) -> list[str]:
        return [name for name, text in (self.config.schema_ or {}).items() if text.strip().lower() == "json"]

    # -- reading ---------------------------------------------------------------------------------
    def read(self, stream: BinaryIO, *, position: dict[str, Any] | None, batch_size: int,
             where: dict[str, Any]) -> Iterator[Chunk]:
        import pyarrow.parquet as pq

        start = position or {}
        first, offset = int(start.get("row_group") or 0), int(start.get("offset") or 0)
        pos = {"row_group": first, "offset": offset}
        try:
            pf = pq.ParquetFile(stream, pre_buffer=True)  # pre_buffer: one read per row group
            columns = self._columns(pf, where)
            extra = _partition_values(pf, where, self.config.columns)
        except SluiceError:
            raise
        except Exception as exc:
            if not is_damage(exc):
                raise
            yield Chunk([], [], pos, exc)
            return
        for group in range(first, pf.num_row_groups):
            skip, seen = (offset if group == first else 0), 0
            try:
                batches = pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns)
                for rb in batches:
                    n = rb.num_rows
                    if seen + n <= skip:
                        seen += n
                        continue
                    if seen < skip:
                        rb = rb.slice(skip - seen)
                    seen += n
                    records = rb.to_pylist()
                    if extra:
                        for record in records:
                            record.update(extra)
                    pos = {"row_group": group, "offset": seen}
                    yield Chunk(records, [], pos)
            except SluiceError:
                raise
            except Exception as exc:
                if not is_damage(exc):
                    raise
                yield Chunk([], [], pos, exc)
                return
            pos = {"row_group": group + 1, "offset": 0}

    def _columns(self, pf: Any, where: dict[str, Any]) -> list[str] | None:
        wanted = self.config.columns
        if wanted is None:
            return None
        names = set(pf.schema_arrow.names) | set(_partition_types(pf))
        missing = [c for c in wanted if c.split(".")[0] not in names]
        if missing:
            place = where.get("key") or where.get("file") or "the file"
            raise PermanentError(f"parquet: column(s) {missing} not in {place}; it has {sorted(names)}")
        stored = set(pf.schema_arrow.names)
        return [c for c in wanted if c.split(".")[0] in stored]

    def count(self, stream: BinaryIO) -> int:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(stream).metadata.num_rows)

    # -- writing ---------------------------------------------------------------------------------
    def writer(self, *, state: Any = None, partition_column: str | None = None) -> FormatWriter:
        return ParquetFileWriter(self, state, partition_column)


def _partition_types(pf: Any) -> dict[str, str]:
    meta = (pf.schema_arrow.metadata or {}).get(PARTITION_META)
    return json.loads(meta) if meta else {}


def _partition_values(pf: Any, where: dict[str, Any], columns: list[str] | None) -> dict[str, Any]:
    """The hive partition columns a Sluice writer left out of the file (their values are in the
    folder names ``name=value``), typed back as they were written."""
    import pyarrow as pa

    types = _partition_types(pf)
    if not types:
        return {}
    path = str(where.get("key") or where.get("file") or "").replace("\\", "/")
    wanted = None if columns is None else {c.split(".")[0] for c in columns}
    out: dict[str, Any] = {}
    for segment in path.split("/")[:-1]:
        name, sep, value = segment.partition("=")
        name = unquote(name)
        if not sep or name not in types or (wanted is not None and name not in wanted):
            continue
        if value == MISSING:
            out[name] = None
            continue
        text = unquote(value)
        try:
            out[name] = pa.array([text]).cast(at.parse_type(types[name])).to_pylist()[0]
        except (ValueError, TypeError, pa.ArrowException):
            out[name] = text
    return out


class _Sink(io.RawIOBase):
    """Where pyarrow writes the file; the container takes the bytes after each row group."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.size += n
        return n

    def tell(self) -> int:
        return self.size

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class ParquetFileWriter(FormatWriter):
    """One Parquet file: batches buffered as Arrow tables, written a row group at a time."""

    def __init__(self, fmt: ParquetFormat, state: Any, partition_column: str | None) -> None:
        self.config = fmt.config
        self.declared = fmt.declared()
        self.json = fmt.json_columns()
        self.schema = self.declared if self.declared is not None else state
        self.state = self.schema
        self.strict = self.config.schema_changes == "dead_letter"
        self.partition_column = partition_column
        self.pending: list[Any] = []
        self.pending_rows = self.pending_bytes = 0
        self.records = 0
        self.sink = _Sink()
        self.writer: Any = None  # pyarrow's, from the first row group on (the schema is fixed then)

    # -- records in -----------------------------------------------------------------------------
    def add(self, records: list[dict[str, Any]]) -> tuple[bytes, list[DeadLetter]]:
        rows = records
        if self.config.nested == "flatten":
            sep = self.config.flatten_separator
            rows = [_flatten(r, sep) for r in rows]
        if self.json:
            rows = [_as_json(r, self.json) for r in rows]
        table, refused = self._convert(rows)
        dead = [DeadLetter(records[i], reason, error_type, {"column": column}) for i, reason, error_type, column
                in refused]
        if table is not None and table.num_rows:
            self.pending.append(table)
            self.pending_rows += table.num_rows
            self.pending_bytes += table.nbytes
            self.records += table.num_rows
        return self._flush(final=False), dead

    def finish(self) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self._flush(final=True)
        if self.writer is None:  # nothing was written: still a valid (empty) file
            self.writer = pq.ParquetWriter(self.sink, self._file_schema(self.schema or pa.schema([])),
                                           **self._options())
        self.writer.close()
        return rows + self.sink.take()

    def _convert(self, rows: list[dict[str, Any]]) -> tuple[Any, list[tuple[int, str, str, str | None]]]:
        """The batch as a table in the file's schema, and ``(index, reason, error type, column)`` of
        the rows refused. Fast path: one Arrow conversion of the whole batch; rows one by one only
        when the batch does not fit as a whole."""
        import pyarrow as pa

        try:
            array = pa.array(rows)
            if not pa.types.is_struct(array.type) or at.has_empty_struct(array.type):
                raise TypeError("not a batch Parquet can store as it is")
            table = pa.Table.from_struct_array(array)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return self._declared_rows(rows) if self.declared is not None else self._rows(rows)
        if self.declared is not None:
            try:
                return at.fit_table(table, self.declared), []
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                return self._declared_rows(rows)
        if self.schema is None:
            self._adopt(table.schema)
            return table, []
        if table.schema.equals(self.schema):
            return table, []
        try:
            merged = at.merge_schema(self.schema, table.schema)
        except at.Conflict:
            return self._rows(rows)
        if merged.equals(self.schema):
            return at.fit_table(table, self.schema), []
        if not self._may_widen(merged):
            return self._rows(rows)
        self._adopt(merged)
        return at.fit_table(table, merged), []

    def _may_widen(self, merged: Any) -> bool:
        import pyarrow as pa

        if not self.strict:
            return True
        # strict: only columns whose type was still unknown may take one, and only before it is written
        return self.writer is None and at.only_fills_nulls(pa.struct(list(self.schema)), pa.struct(list(merged)))

    def _adopt(self, schema: Any) -> None:
        """Take a (wider) schema; once a row group is written the file cannot, so the next one does."""
        if self.writer is not None and self.schema is not None:
            self.state = schema
            raise Rollover()
        self.schema = self.state = schema

    def _rows(self, rows: list[dict[str, Any]]) -> tuple[Any, list[tuple[int, str, str, str | None]]]:
        """Row by row: which rows fit (widening the schema as allowed) and why the others do not."""
        import pyarrow as pa

        rows = list(rows)
        schema, kept, refused = self.schema, [], []
        for i, row in enumerate(rows):
            try:
                row_type = pa.array([row]).type
                if at.has_empty_struct(row_type):
                    rows[i] = row = _without_empty(row)
                    row_type = pa.array([row]).type
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                column, reason = _unstorable(row, exc)
                refused.append((i, reason, "Unconvertible", column))
                continue
            row_schema = pa.schema(list(row_type))
            if schema is None:
                schema = row_schema
                kept.append(i)
                continue
            try:
                merged = at.merge_schema(schema, row_schema)
            except at.Conflict as conflict:
                refused.append((i, str(conflict), "SchemaConflict", conflict.path))
                continue
            if not merged.equals(schema) and self.strict and not (
                    self.writer is None and at.only_fills_nulls(pa.struct(list(schema)), pa.struct(list(merged)))):
                column, old, new = at.first_change(schema, merged) or ("?", None, None)
                reason = (f"column {column!r} is not in the file's schema ({new} in this record)" if old is None else
                          f"column {column!r}: {old} in the file's schema, {new} in this record")
                refused.append((i, reason, "SchemaMismatch", column))
                continue
            schema = merged
            kept.append(i)
        if schema is None:
            return None, refused
        if self.schema is None or not schema.equals(self.schema):
            self._adopt(schema)
        kept_rows = [rows[i] for i in kept]
        if not kept_rows:
            return None, refused
        table = pa.Table.from_struct_array(pa.array(kept_rows, type=pa.struct(list(schema))))
        return table.replace_schema_metadata(schema.metadata), refused

    def _declared_rows(self, rows: list[dict[str, Any]]) -> tuple[Any, list[tuple[int, str, str, str | None]]]:
        """Row by row against the declared schema: a value that does not cast refuses its row."""
        import pyarrow as pa

        columns: dict[str, list[Any]] = {f.name: [] for f in self.declared}
        refused = []
        for i, row in enumerate(rows):
            values, problem = {}, None
            for f in self.declared:
                value = row.get(f.name)
                if value is None:
                    values[f.name] = None
                    continue
                try:
                    values[f.name] = at.fit(pa.array([value]), f.type).to_pylist()[0]
                except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                    problem = (f.name, f"column {f.name!r}: {_short(value)} ({type(value).__name__}) does not cast "
                                       f"to {f.type}: {exc}")
                    break
            if problem is not None:
                refused.append((i, problem[1], "CastError", problem[0]))
                continue
            for name, value in values.items():
                columns[name].append(value)
        arrays = [pa.array(columns[f.name], type=f.type) for f in self.declared]
        return pa.Table.from_arrays(arrays, schema=self.declared), refused

    # -- row groups out -------------------------------------------------------------------------
    def _flush(self, final: bool) -> bytes:
        """Write full row groups (every buffered row when ``final``); returns the bytes written."""
        import pyarrow as pa

        size, limit = self.config.row_group_size, self.config.row_group_bytes
        while self.pending_rows and (final or self.pending_rows >= size or self.pending_bytes >= limit):
            tables = [t if t.schema.equals(self.schema) else at.fit_table(t, self.schema) for t in self.pending]
            table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
            head, rest = table.slice(0, size), table.slice(size)
            self._write(head)
            self.pending = [rest] if rest.num_rows else []
            self.pending_rows = rest.num_rows
            self.pending_bytes = rest.nbytes if rest.num_rows else 0
        return self.sink.take()

    def _write(self, table: Any) -> None:
        import pyarrow.parquet as pq

        column = self.partition_column
        if column is not None and column in table.column_names:
            table = table.drop_columns([column])
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.sink, self._file_schema(self.schema), **self._options())
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))

    def _file_schema(self, schema: Any) -> Any:
        column = self.partition_column
        if column is None or column not in schema.names:
            return schema
        kept = schema.remove(schema.get_field_index(column))
        meta = dict(schema.metadata or {})
        meta[PARTITION_META] = json.dumps({column: str(schema.field(column).type)}).encode()
        return kept.with_metadata(meta)

    def _options(self) -> dict[str, Any]:
        c = self.config
        return {"compression": c.compression, "compression_level": c.compression_level,
                "use_dictionary": c.dictionary, "write_statistics": True}


def _flatten(record: dict[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if isinstance(value, dict):
            if value:
                out.update(_flatten(value, sep, name))
            else:
                out[name] = None
        else:
            out[name] = value
    return out


def _as_json(record: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    changed = {c: orjson.dumps(record[c], default=str).decode() for c in columns
               if record.get(c) is not None and not isinstance(record[c], str)}
    return {**record, **changed} if changed else record


def _without_empty(value: Any) -> Any:
    """``{}`` (a struct Parquet cannot store) as null, at any depth."""
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items()} if value else None
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def _unstorable(row: dict[str, Any], exc: BaseException) -> tuple[str | None, str]:
    import pyarrow as pa

    for key, value in row.items():
        try:
            pa.array([value])
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as inner:
            return key, f"column {key!r}: {_short(value)} cannot be stored in Parquet: {inner}"
    return None, f"the record cannot be stored in Parquet: {exc}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["ParquetConfig", "ParquetFileWriter", "ParquetFormat"]
