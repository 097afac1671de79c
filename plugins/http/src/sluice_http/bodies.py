"""Page bodies into records: JSON (a path to the list, or a whole-list body), JSON Lines and CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sluice_transforms.paths import MISSING, get_path

Format = Literal["auto", "json", "jsonl", "csv"]


class Malformed(Exception):
    """A page that yields no records at all: not valid JSON, or without the records path."""


@dataclass(frozen=True, slots=True)
class Bad:
    """An item of a page that is not a record (a JSON line that does not parse, a number in the list)."""

    where: int  # the item's index, or its line number in JSON Lines
    reason: str
    item: Any


@dataclass(slots=True)
class Parsed:
    """The items of a page in order (records, and ``Bad`` for items that are not records) and the
    parsed body (JSON pages only: the paginator reads cursors and totals from it)."""

    items: list[Any]
    body: Any = None
    clean: bool = True  # every item is a record (the common case: no per-item checks needed)


def kind_of(content_type: str, fmt: Format) -> Format:
    """The body format: as configured, or from the Content-Type (JSON when it does not say)."""
    if fmt != "auto":
        return fmt
    ct = content_type.lower()
    if "ndjson" in ct or "jsonl" in ct or "json-seq" in ct or "jsonlines" in ct:
        return "jsonl"
    if "csv" in ct:
        return "csv"
    return "json"


def parse_page(content: bytes, kind: Format, records: tuple[str, ...] | None, delimiter: str = ",") -> Parsed:
    """Records of one page; raises ``Malformed`` when the page as a whole cannot be read."""
    if kind == "jsonl":
        return _lines(content)
    if kind == "csv":
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise Malformed(f"not UTF-8 CSV: {exc}") from None
        return Parsed(list(csv.DictReader(io.StringIO(text), delimiter=delimiter)))
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"not valid JSON: {exc}") from None
    items = body
    if records is not None:
        items = get_path(body, records) if isinstance(body, dict) else MISSING
        if items is MISSING:
            raise Malformed(f"the body has no {'.'.join(records)!r} (records:)")
        if items is None:
            items = []
    if not isinstance(items, list):
        where = f"{'.'.join(records)!r}" if records else "the body"
        hint = "" if records else "; set records: to the path of the list"
        raise Malformed(f"{where} is a JSON {type(items).__name__}, not a list{hint}")
    return _objects(items, body)


def _objects(items: list[Any], body: Any) -> Parsed:
    if all(type(item) is dict for item in items):
        return Parsed(items, body)
    return Parsed([item if isinstance(item, dict) else Bad(i, f"item {i} is a JSON {type(item).__name__}, "
                                                                f"not an object", item)
                   for i, item in enumerate(items)], body, clean=False)


def _lines(content: bytes) -> Parsed:
    out: list[Any] = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            out.append(Bad(number, f"line {number} is not valid JSON: {exc}", line[:200].decode("utf-8", "replace")))
            continue
        out.append(item if isinstance(item, dict) else
                   Bad(number, f"line {number} is a JSON {type(item).__name__}, not an object", item))
    return Parsed(out, clean=not any(type(item) is Bad for item in out))
