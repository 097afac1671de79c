"""CSV and TSV: delimited text, one record per row, compressed (or not) by the container like
JSON Lines.

Reading: the header row names the columns (or ``columns`` does); a row with another number of
fields, a value that does not cast to its declared type, or bytes that are not in the file's
encoding become dead letters with the file and the (1-based, physical) line where the row starts;
the rest of the file loads. The position is the number of lines consumed, header included, so a
resumed read continues at the next row. A cell equal to ``null_value`` (empty by default) is null.

Writing: the columns are ``columns``, or the fields of the file's first batch (in order of first
appearance); a later record with a field that is not a column is a dead letter naming it (with
``columns`` declared, other fields are not written). Nested values are written as JSON.
"""

from __future__ import annotations

import base64
import codecs
import csv
import io
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import Any, BinaryIO, Literal

import orjson
from pydantic import Field, field_validator

from sluice import DeadLetter
from sluice.formats import Chunk, Format, FormatConfig, FormatWriter, until_damaged

TypeName = Literal["string", "int", "float", "bool", "json", "date", "timestamp"]
QUOTING = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL, "nonnumeric": csv.QUOTE_NONNUMERIC,
           "none": csv.QUOTE_NONE}
TRUE, FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes the encoding could not decode (surrogateescape)


class CsvConfig(FormatConfig):
    """Delimited text options, for reading and writing."""

    header: bool = Field(True, description="The first row holds the column names (read: taken from it; write: "
                                           "written).")
    columns: list[str] | None = Field(
        None, description="Column names, in order. Reading: instead of the header row (then skipped); without "
                          "header and columns: column_1, column_2… Writing: the columns written (other fields are "
                          "left out); default: the fields of the file's first batch."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator (tsv: a tab).")
    quote_char: str = Field('"', min_length=1, max_length=1, description="Quotes fields holding the delimiter, "
                                                                         "quotes or newlines.")
    quoting: Literal["minimal", "all", "nonnumeric", "none"] = Field(
        "minimal", description="Writing: quote fields when needed (minimal), always (all), all but numbers "
                               "(nonnumeric), or never (none; needs escape_char for special characters). Reading: "
                               "none treats quote characters as text."
    )
    escape_char: str | None = Field(None, min_length=1, max_length=1, description="Escapes the delimiter and "
                                    "quotes (instead of doubling quotes); needed with quoting: none.")
    encoding: str = Field("utf-8", description="Text encoding (any Python codec: utf-8, latin-1, cp1252, utf-16…); "
                                               "a UTF-8 byte-order mark is skipped.")
    null_value: str = Field("", description="The cell text of a null: written for null, read as null.")
    types: dict[str, TypeName] = Field(
        default_factory=dict,
        description="Declared column types ({column: string|int|float|bool|json|date|timestamp}): cells are cast "
                    "when read, values checked when written; one that does not cast is a dead letter. Others: string."
    )

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        return value


class TsvConfig(CsvConfig):
    """Tab-separated values: CSV options with a tab as the delimiter."""

    delimiter: str = Field("\t", min_length=1, max_length=1, description="Field separator (default: a tab).")


class CastError(ValueError):
    """A value that is not of its column's declared type."""


# -- casts: cell text -> value (reading), value -> cell text (writing) --------------------------------

def _read_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise CastError(f"{text!r} is not a bool")


def _read_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


READERS: dict[str, Callable[[str], Any]] = {
    "string": str, "int": lambda t: int(t.strip()), "float": lambda t: float(t.strip()), "bool": _read_bool,
    "json": orjson.loads, "date": lambda t: date.fromisoformat(t.strip()), "timestamp": _read_timestamp,
}


def cell(value: Any) -> Any:
    """A value as a cell: text as is, bool as true/false, numbers as numbers, nested values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=str).decode()
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    return str(value)


def _write_int(value: Any) -> int:
    if isinstance(value, bool):
        raise CastError("a bool is not an int")
    if isinstance(value, float):
        if not value.is_integer():
            raise CastError(f"{value!r} is not an int")
        return int(value)
    return int(value.strip()) if isinstance(value, str) else int(value)


def _write_float(value: Any) -> float:
    if isinstance(value, bool):
        raise CastError("a bool is not a float")
    return float(value.strip()) if isinstance(value, str) else float(value)


def _write_bool(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "true" if _read_bool(value) else "false"
    raise CastError(f"{value!r} is not a bool")


def _write_date(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return date.fromisoformat(str(value).strip()).isoformat()


def _write_timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    _read_timestamp(text)
    return text


WRITERS: dict[str, Callable[[Any], Any]] = {
    "string": cell, "int": _write_int, "float": _write_float, "bool": _write_bool,
    "json": lambda v: orjson.dumps(v, default=str).decode(), "date": _write_date, "timestamp": _write_timestamp,
}


# -- the format -----------------------------------------------------------------------------------

class CsvFormat(Format):
    """Comma-separated values (RFC 4180 style, configurable): header, delimiter, quoting, encoding,
    declared column types; compressed by the container like JSON Lines."""

    type = "csv"
    Config: Any = CsvConfig
    config: CsvConfig
    extension = ".csv"
    suffixes = (".csv",)
    content_type = "text/csv"

    def _dialect(self, reading: bool) -> dict[str, Any]:
        c = self.config
        quoting = QUOTING[c.quoting]
        if reading and quoting != csv.QUOTE_NONE:
            quoting = csv.QUOTE_MINIMAL  # the declared types decide what a cell becomes, not its quotes
        return {"delimiter": c.delimiter, "quotechar": c.quote_char, "quoting": quoting,
                "escapechar": c.escape_char, "doublequote": c.escape_char is None}

    def _text(self, stream: BinaryIO) -> io.TextIOWrapper:
        encoding = self.config.encoding
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"  # skips a byte-order mark
        return io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape", newline="")

    def read(self, stream: BinaryIO, *, position: dict[str, Any] | None, batch_size: int,
             where: dict[str, Any]) -> Iterator[Chunk]:
        c = self.config
        skip = int((position or {}).get("line") or 0)
        damage: list[BaseException] = []
        text = self._text(stream)
        reader = csv.reader(until_damaged(iter(text), damage), **self._dialect(reading=True))
        casts = {name: READERS[kind] for name, kind in c.types.items() if kind != "string"}
        null = c.null_value
        names = c.columns
        line = 0
        records: list[dict[str, Any]] = []
        dead: list[DeadLetter] = []
        if c.header:
            head = next(reader, None)
            line = reader.line_num
            if head is not None and names is None:
                names = head
        while True:
            start = line + 1
            try:
                row = next(reader, None)
            except csv.Error as exc:  # a row the parser rejects (a NUL byte...): it is consumed all the same
                line = reader.line_num
                if line > skip:
                    dead.append(DeadLetter(None, f"line {start}: {exc}", "CsvError", {**where, "line": start}))
                row = []
            if row is None:
                break
            line = reader.line_num
            if line <= skip or not row:
                continue  # already delivered before a resume, or a blank line
            if names is None:
                names = [f"column_{i}" for i in range(1, len(row) + 1)]
            problem = self._row_problem(row, names)
            if problem is not None:
                dead.append(self._dead(row, start, where, *problem))
            else:
                record = {k: (None if v == null else v) for k, v in zip(names, row, strict=True)}
                try:
                    for name, cast in casts.items():
                        value = record.get(name)
                        if value is not None:
                            record[name] = cast(value)
                except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                    kind = c.types[name]
                    dead.append(self._dead(row, start, where, f"column {name!r}: {value!r} is not a {kind} ({exc})",
                                           "CastError", {"column": name}))
                else:
                    records.append(record)
            if len(records) + len(dead) >= batch_size:
                yield Chunk(records, dead, {"line": line})
                records, dead = [], []
        if records or dead:
            yield Chunk(records, dead, {"line": line})
        if damage:
            yield Chunk([], [], {"line": line}, damage[0])

    def _row_problem(self, row: list[str], names: list[str]) -> tuple[str, str, dict[str, Any]] | None:
        if _SURROGATE.search("".join(row)):
            return (f"not valid {self.config.encoding}", "NotDecodable", {})
        if len(row) != len(names):
            return (f"{len(row)} fields, expected {len(names)} ({', '.join(names[:8])}"
                    f"{', …' if len(names) > 8 else ''})", "FieldCount", {"fields": len(row)})
        return None

    def _dead(self, row: list[str], start: int, where: dict[str, Any], reason: str, error_type: str,
              extra: dict[str, Any]) -> DeadLetter:
        """The row as it was read (re-joined with the file's dialect); bytes that were not valid in the
        encoding keep their exact values, in base64 with ``context.encoding: base64``."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="", **self._dialect(reading=False)).writerow(row)
        text = buf.getvalue()
        context = {**where, "line": start, **extra}
        record: str = text
        if error_type == "NotDecodable":
            record = base64.b64encode(text.encode(self.config.encoding, "surrogateescape")).decode("ascii")
            context["encoding"] = "base64"
        return DeadLetter(record=record, reason=f"line {start}: {reason}", error_type=error_type, context=context)

    def writer(self, *, state: Any = None, partition_column: str | None = None) -> FormatWriter:
        return DelimitedWriter(self, state)

    def count(self, stream: BinaryIO) -> int:
        rows = (row for row in csv.reader(self._text(stream), **self._dialect(reading=True)) if row)
        return sum(1 for _ in rows) - (1 if self.config.header else 0)


class TsvFormat(CsvFormat):
    """Tab-separated values: CSV with a tab as the delimiter."""

    type = "tsv"
    Config = TsvConfig
    extension = ".tsv"
    suffixes = (".tsv", ".tab")
    content_type = "text/tab-separated-values"


class DelimitedWriter(FormatWriter):
    """Rows of one CSV/TSV file; the header goes first."""

    def __init__(self, fmt: CsvFormat, state: Any) -> None:
        self.fmt, c = fmt, fmt.config
        self.declared = c.columns is not None
        self.columns: list[str] | None = list(c.columns) if c.columns is not None else state
        self.state = self.columns
        self.records = 0
        self.header_due = c.header
        self.dialect = {**fmt._dialect(reading=False), "lineterminator": "\n"}
        self.null = c.null_value

    def add(self, records: list[dict[str, Any]]) -> tuple[bytes, list[DeadLetter]]:
        c = self.fmt.config
        if self.columns is None:
            self.columns = self.state = list(dict.fromkeys(k for r in records for k in r))
        columns, known = self.columns, set(self.columns)
        convert = [WRITERS[c.types.get(name, "string")] for name in columns]
        out = io.StringIO()
        w = csv.writer(out, **self.dialect)
        header = self.header_due
        if header:
            w.writerow(columns)
            self.header_due = False
        dead: list[DeadLetter] = []
        rows: list[tuple[dict[str, Any], list[Any]]] = []
        null = self.null
        for record in records:
            if not self.declared and not known.issuperset(record):
                extra = [k for k in record if k not in known]
                dead.append(DeadLetter(record, f"field(s) {extra} are not columns of this file (its columns come "
                                               f"from its first batch: {', '.join(columns[:8])}…); declare columns",
                                       "UnknownField", {"fields": extra}))
                continue
            try:
                row = [null if (v := record.get(name)) is None else conv(v) for name, conv in
                       zip(columns, convert, strict=True)]
            except (ValueError, TypeError) as exc:
                bad = next(n for n, conv in zip(columns, convert, strict=True) if not _converts(conv, record.get(n)))
                dead.append(DeadLetter(record, f"column {bad!r}: {record.get(bad)!r} is not a {c.types.get(bad)} "
                                               f"({exc})", "CastError", {"column": bad}))
                continue
            rows.append((record, row))
        for record, row in rows:
            try:
                w.writerow(row)
            except csv.Error as exc:  # quoting: none without escape_char, and a cell needs escaping
                dead.append(DeadLetter(record, f"cannot write the row: {exc}", "CsvError", {}))
        text = out.getvalue()
        try:
            data = text.encode(c.encoding)
        except UnicodeEncodeError:
            data, more = self._encode_rows(text if header else "", rows)
            dead.extend(more)
        self.records += len(records) - len(dead)
        return data, dead

    def _encode_rows(self, text: str, rows: list[tuple[dict[str, Any], list[Any]]]) -> tuple[bytes, list[DeadLetter]]:
        """The batch again row by row (``text`` starts with the header when this batch wrote it):
        rows the encoding cannot hold become dead letters."""
        encoding = self.fmt.config.encoding
        head = text.split("\n", 1)[0] + "\n" if text else ""
        parts, dead = [head.encode(encoding, "replace")] if head else [], []
        for record, row in rows:
            buf = io.StringIO()
            try:
                csv.writer(buf, **self.dialect).writerow(row)
                parts.append(buf.getvalue().encode(encoding))
            except (UnicodeEncodeError, csv.Error) as exc:
                dead.append(DeadLetter(record, f"cannot be written in {encoding}: {exc}", "NotEncodable", {}))
        return b"".join(parts), dead


def _converts(conv: Callable[[Any], Any], value: Any) -> bool:
    if value is None:
        return True
    try:
        conv(value)
    except (ValueError, TypeError):
        return False
    return True


__all__ = ["CsvConfig", "CsvFormat", "DelimitedWriter", "TsvConfig", "TsvFormat"]
