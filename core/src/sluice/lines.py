"""JSON Lines parsing with line numbers: good lines become records, bad ones dead letters.

Shared by every source that reads JSON Lines (local files, S3 objects). Blank lines are skipped.
A line that is not a JSON object becomes a dead letter carrying the raw text and where it was.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import orjson

from .records import DeadLetter, Record

CHUNK = 1 << 20
BOM = b"\xef\xbb\xbf"


def iter_lines(stream: BinaryIO, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """Lines of a binary stream without their newline, read in large chunks (fast, bounded memory).

    ``read1`` where the stream has it: a decompressor that hits corrupt or truncated data then
    still hands over everything before it, instead of losing a whole buffered chunk.
    """
    tail = b""
    read = getattr(stream, "read1", None) or stream.read
    first = True
    while True:
        chunk = read(chunk_size)
        if not chunk:
            break
        if first:
            first = False
            chunk = chunk.removeprefix(BOM)  # a UTF-8 byte-order mark is not part of the first line
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        yield from parts
    if tail:
        yield tail


def parse_batches(
    lines: Iterable[bytes],
    batch_size: int,
    *,
    skip: int = 0,
    where: dict[str, Any] | None = None,
) -> Iterator[tuple[list[Record], list[DeadLetter], int]]:
    """Group lines into ``(records, dead_letters, lines_consumed)`` of up to ``batch_size`` lines.

    ``lines_consumed`` counts every line so far (blank and bad ones too) and is the checkpoint:
    passing it back as ``skip`` resumes right after. ``where`` (file, key...) goes into the
    context of each dead letter, together with the 1-based line number.
    """
    where = where or {}
    records: list[Record] = []
    dead: list[DeadLetter] = []
    loads = orjson.loads
    n = 0
    taken = 0
    for line in lines:
        n += 1
        if n <= skip:
            continue
        taken += 1
        if line.strip():
            try:
                value = loads(line)
            except orjson.JSONDecodeError as exc:
                dead.append(_bad_line(line, f"malformed JSON: {exc}", "JSONDecodeError", where, n))
            else:
                if type(value) is dict:
                    records.append(value)
                else:
                    dead.append(_bad_line(line, f"not a JSON object: {type(value).__name__}", "NotAnObject", where, n))
        if taken >= batch_size:
            yield records, dead, n
            records, dead, taken = [], [], 0
    if taken:
        yield records, dead, n


def _bad_line(line: bytes, reason: str, error_type: str, where: dict[str, Any], n: int) -> DeadLetter:
    """A line that is not a JSON object, kept exactly: its text, or (not UTF-8) its bytes in base64
    with ``context.encoding: base64``, so a replay after a fix gets exactly what was read."""
    context = {**where, "line": n}
    try:
        record: str = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        record = base64.b64encode(line).decode("ascii")
        context["encoding"] = "base64"
        reason = f"not UTF-8 (byte {exc.start + 1}: {line[exc.start:exc.start + 1]!r})"
        error_type = "NotUTF8"
    return DeadLetter(record=record, reason=f"line {n}: {reason}", error_type=error_type, context=context)


def dumps_lines(records: Iterable[Record]) -> bytes:
    """Records as JSON Lines bytes (one trailing newline per record)."""
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    return b"".join([dumps(r, default=str, option=opt) for r in records])
