"""Helpers of the format tests: records every format can hold, files written through a format's
own writer, and part files read back (Parquet with pyarrow, text formats with their reader)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sluice.codecs import compressor, detect, open_reader
from sluice.formats import Format, get_format

BUCKET = "sluice-formats"
FAST_RUNTIME = {"retry": {"attempts": 4, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_time_s": 30}}


def conn(url: str) -> dict[str, Any]:
    return {"endpoint_url": url, "region": "us-east-1"}


def events(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Log events of one shape (so every row has every column, as Parquet and CSV give them back)."""
    return [{"_id": f"e-{i:05d}", "n": i, "app": ("web", "api", "db")[i % 3], "latency": i * 0.5,
             "ok": i % 4 != 0, "msg": f"event {i}, \"quoted\"\nsecond line"} for i in range(start, start + n)]


def encode(fmt: Format | str | dict[str, Any], records: list[dict[str, Any]], compression: str = "none") -> bytes:
    """One whole file of ``records`` in ``fmt``, as a sink would write it."""
    fmt = get_format(fmt)
    writer = fmt.writer()
    data, dead = writer.add(records)
    assert not dead, [d.reason for d in dead]
    body = data + writer.finish()
    if fmt.text:
        c = compressor(compression)  # type: ignore[arg-type]
        body = c.compress(body) + c.flush()
    return body


def decode(fmt: Format | str | dict[str, Any], body: bytes, name: str = "") -> list[dict[str, Any]]:
    """Every record of one file's bytes (decompressed by ``name``'s extension for text formats)."""
    fmt = get_format(fmt)
    stream: Any = io.BytesIO(body)
    if fmt.text:
        stream = open_reader(stream, detect(name))
    out: list[dict[str, Any]] = []
    for chunk in fmt.read(stream, position=None, batch_size=1000, where={"file": name}):
        assert chunk.damage is None, chunk.damage
        out.extend(chunk.records)
    return out


def read_folder(fmt: Format | str | dict[str, Any], folder: str | Path) -> list[dict[str, Any]]:
    """Every record of the part files under ``folder`` (recursively)."""
    out: list[dict[str, Any]] = []
    for path in sorted(Path(folder).rglob("part-*")):
        out.extend(decode(fmt, path.read_bytes(), path.name))
    return out
