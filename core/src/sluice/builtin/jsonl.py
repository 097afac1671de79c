"""JSON Lines, the built-in format: one JSON object per line.

Reading keeps every promise the jsonl source always made: a malformed line or one that is not an
object becomes a dead letter with its line number (a line that is not UTF-8 keeps its exact bytes,
in base64), blank lines are skipped, a UTF-8 byte-order mark at the start is skipped, and corrupt or
truncated input is reported after every whole line before it. The position is the line count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from ..formats import Chunk, Format, FormatConfig, FormatWriter, until_damaged
from ..lines import dumps_lines, iter_lines, parse_batches
from ..records import DeadLetter, Record


class JsonlFormatConfig(FormatConfig):
    """JSON Lines has no options."""


class JsonlWriter(FormatWriter):
    """Records as JSON Lines (orjson), one trailing newline each."""

    def __init__(self) -> None:
        self.records = 0

    def add(self, records: list[Record]) -> tuple[bytes, list[DeadLetter]]:
        self.records += len(records)
        return dumps_lines(records), []


class JsonlFormat(Format):
    """JSON Lines: one JSON object per line; the position is the number of lines consumed."""

    type = "jsonl"
    Config = JsonlFormatConfig
    extension = ".jsonl"
    suffixes = (".jsonl", ".ndjson", ".json")
    content_type = "application/x-ndjson"

    def read(self, stream: BinaryIO, *, position: dict[str, Any] | None, batch_size: int,
             where: dict[str, Any]) -> Iterator[Chunk]:
        skip = int((position or {}).get("line") or 0)
        damage: list[BaseException] = []
        line = skip
        for records, dead, line in parse_batches(until_damaged(iter_lines(stream), damage), batch_size, skip=skip,
                                                 where=where):
            yield Chunk(records, dead, {"line": line})
        if damage:
            yield Chunk([], [], {"line": line}, damage[0])

    def writer(self, *, state: Any = None, partition_column: str | None = None) -> FormatWriter:
        return JsonlWriter()

    def count(self, stream: BinaryIO) -> int:
        return sum(1 for line in iter_lines(stream) if line.strip())


def __getattr__(name: str) -> Any:
    # the local source and sink lived here as JsonlSource / JsonlSink before they became `file`
    if name in ("JsonlSource", "JsonlSink"):
        from . import files

        return getattr(files, name.replace("Jsonl", "File"))
    raise AttributeError(name)


__all__ = ["JsonlFormat", "JsonlFormatConfig", "JsonlWriter"]
