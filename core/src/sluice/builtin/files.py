"""Local files as a source and a sink (``type: file``, also ``jsonl``), in any format (``format:``).

The sink doubles as the local dead-letter store: files are written under a temporary name and
renamed when complete, named deterministically by partition and batch sequence, so a re-run or a
resumed run rewrites the same files instead of adding new ones. JSON Lines is the default format;
text formats may be compressed (gzip, zstd), binary ones (Parquet) compress inside.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from pydantic import Field

from ..codecs import EXTENSIONS, Compression, compressor, detect, open_reader
from ..components import ComponentConfig, Sink, SinkRun, Source
from ..context import RunContext
from ..errors import ConfigError, PermanentError
from ..formats import Format, FormatOption, FormatWriter, Rollover, check_compression, strip_compression
from ..records import Batch, Partition, WriteResult, safe_key

_PART = re.compile(r"part-(?P<partition>.+)-(?P<seq>\d{5,})(?:\.[A-Za-z0-9]+)+\Z")


def _is_data_file(name: str, fmt: Format) -> bool:
    return strip_compression(name).endswith(fmt.suffixes)


def _checkpoint(fmt: Format, position: dict[str, Any]) -> Any:
    """Text formats keep the line count as the checkpoint (as the jsonl source always did)."""
    return int(position.get("line") or 0) if fmt.text else position


def _position(fmt: Format, checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    return {"line": int(checkpoint)} if fmt.text else dict(checkpoint)


class FileSourceConfig(ComponentConfig):
    """Where to read: a file, a directory (read recursively) or a glob pattern; and in what format."""

    path: str = Field(description="File, directory or glob (e.g. data/**/*.jsonl.gz).")
    format: FormatOption = Field("jsonl", validate_default=True,
                                 description="File format: jsonl (default), or parquet, csv, tsv with sluice-formats; "
                                             "a name or a block with the format's options.")
    compression: Literal["auto", "none", "gzip", "zstd"] = Field(
        "auto", description="auto: by extension (.gz, .zst); text formats only."
    )


class FileSource(Source):
    """Reads local files, one partition per file, in the chosen format (JSON Lines by default); the
    checkpoint is the line count (text formats) or the format's position (Parquet: row group, row)."""

    type = "file"
    aliases = ("jsonl",)
    Config = FileSourceConfig
    config: FileSourceConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        check_compression(self.config.format, self.config.compression, "file source")

    def describe(self) -> str:
        return self.config.path

    def partitions(self) -> list[Partition]:
        path, fmt = self.config.path, self.config.format
        if globlib.has_magic(path):
            base = Path(path.split("*")[0].rsplit("?", 1)[0]).parent if "/" in path else Path(".")
            files = sorted(Path(p) for p in globlib.glob(path, recursive=True) if Path(p).is_file())
        elif Path(path).is_dir():
            base = Path(path)
            files = sorted(p for p in base.rglob("*") if p.is_file() and _is_data_file(p.name, fmt))
        elif Path(path).is_file():
            base, files = Path(path).parent, [Path(path)]
        else:
            raise PermanentError(f"file source: no such file or directory: {path}")
        return [Partition(key=str(f.relative_to(base)) if f.is_relative_to(base) else f.name,
                          spec={"path": str(f.resolve())}) for f in files]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        path, fmt = partition.spec["path"], self.config.format
        compression: Compression = detect(path) if self.config.compression == "auto" else self.config.compression
        position = _position(fmt, checkpoint)
        try:
            with open(path, "rb") as raw:
                stream = open_reader(raw, compression) if fmt.text else raw
                for chunk in fmt.read(stream, position=position, batch_size=self.ctx.runtime.batch_size,
                                      where={"file": path}):
                    position = chunk.position
                    if chunk.records or chunk.dead_letters:
                        yield Batch(chunk.records, checkpoint=_checkpoint(fmt, position),
                                    dead_letters=chunk.dead_letters)
                    if chunk.damage is not None:  # what came before the damage was delivered
                        raise PermanentError(_unreadable(path, fmt, position, chunk.damage))
        except (EOFError, OSError, ValueError) as exc:  # the file itself could not be opened or read
            raise PermanentError(_unreadable(path, fmt, position, exc)) from None


def _unreadable(path: str, fmt: Format, position: dict[str, Any] | None, exc: BaseException) -> str:
    """Corrupt or truncated data (gzip, zstd, a cut Parquet file), named by file and position."""
    return f"file source: {path}: cannot read past {fmt.describe(position)}: {type(exc).__name__}: {exc}"


class FileSinkConfig(ComponentConfig):
    """Where and how to write part files."""

    path: str = Field(description="Output directory (templated, e.g. out/date={{ ds }}).")
    format: FormatOption = Field("jsonl", validate_default=True,
                                 description="File format: jsonl (default), or parquet, csv, tsv with sluice-formats; "
                                             "a name or a block with the format's options.")
    compression: Compression = Field("none", description="none, gzip or zstd (text formats).")
    max_records_per_file: int = Field(100_000, ge=1, description="Roll over to a new part file after this many.")
    overwrite: bool = Field(
        True, description="Commit removes part files of partitions the run no longer has; false: leave them "
                          "(several jobs share the folder). A partition written again always replaces its own."
    )
    markers_when_empty: bool = Field(True, description="Write _SUCCESS and _manifest.json even with no records.")


@dataclass
class _OpenFile:
    name: str
    seq: int
    tmp: Path
    handle: BinaryIO
    compressor: Any
    writer: FormatWriter
    bytes: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)

    def append(self, data: bytes) -> None:
        chunk = self.compressor.compress(data) if data else b""
        if chunk:
            self.handle.write(chunk)
            self.sha256.update(chunk)
            self.bytes += len(chunk)


class FileSink(Sink):
    """Writes ``part-{partition}-{seq:05d}.{ext}`` files in the chosen format (JSON Lines by default,
    optionally gzip or zstd), then ``_manifest.json`` and ``_SUCCESS``.

    Two-phase: any number of instances (processes) write different partitions into one folder;
    ``commit`` lists the folder, so it works from a fresh instance that wrote nothing.
    """

    type = "file"
    aliases = ("jsonl",)
    Config = FileSinkConfig
    config: FileSinkConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self.dir = Path(self.config.path)
        self.format = self.config.format
        check_compression(self.format, self.config.compression, "file sink")
        if ctx.sink_role == "dead_letters" and self.format.type != "jsonl":
            raise ConfigError(f"file sink: dead letters are stored as JSON Lines, not {self.format.type} "
                              "(leave format out of the dead_letter block)")
        self.compression: Compression = self.config.compression if self.format.text else "none"
        self._open: dict[str, _OpenFile] = {}
        self._closed: dict[str, dict[str, Any]] = {}
        self._state: dict[str, Any] = {}  # partition -> format state carried to its next file (a schema)
        self._lock = threading.Lock()
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"file sink: path {self.dir} exists and is not a directory")
        self.started = False

    def _parts(self) -> list[tuple[str, int, Path]]:
        """``(partition, seq, path)`` of every part file in the folder (any format)."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            m = _PART.match(p.name)
            if m:
                out.append((m["partition"], int(m["seq"]), p))
        return sorted(out, key=lambda t: t[2].name)

    def start_partition(self, partition: str, seq: int) -> None:
        self.started = True
        key = safe_key(partition)
        for name, file_seq, path in self._parts():
            if name == key and file_seq >= seq:
                path.unlink(missing_ok=True)

    def describe(self) -> str:
        return str(self.config.path)

    def write(self, batch: Batch) -> WriteResult:
        if not batch.records:
            return WriteResult(durable=batch.partition not in self._open)
        f = self._open.get(batch.partition)
        if f is None:
            f = self._start(batch.partition, batch.seq)
        try:
            data, dead = f.writer.add(batch.records)
        except Rollover:  # the file's schema cannot take these records: they start the next file
            self._finish(batch.partition)
            f = self._start(batch.partition, batch.seq)
            data, dead = f.writer.add(batch.records)
        f.append(data)
        durable = False
        if f.writer.records >= self.config.max_records_per_file:
            self._finish(batch.partition)
            durable = True
        return WriteResult(written=len(batch.records) - len(dead), dead_letters=dead, durable=durable)

    def finish_partition(self, partition: str) -> WriteResult:
        if partition in self._open:
            self._finish(partition)
        return WriteResult()

    def _start(self, partition: str, seq: int) -> _OpenFile:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{safe_key(partition)}-{seq:05d}{self.format.extension}{EXTENSIONS[self.compression]}"
        tmp = self.dir / f".{name}.tmp"
        writer = self.format.writer(state=self._state.get(partition))
        f = _OpenFile(name, seq, tmp, open(tmp, "wb"), compressor(self.compression), writer)
        with self._lock:
            self._open[partition] = f
        return f

    def _finish(self, partition: str) -> None:
        with self._lock:
            f = self._open.pop(partition)
        f.append(f.writer.finish())
        tail = f.compressor.flush()
        f.handle.write(tail)
        f.sha256.update(tail)
        f.bytes += len(tail)
        f.handle.close()
        os.replace(f.tmp, self.dir / f.name)  # atomic: a part file is complete or absent
        with self._lock:
            self._state[partition] = f.writer.state
            self._closed[f.name] = {"records": f.writer.records, "bytes": f.bytes, "sha256": f.sha256.hexdigest()}

    def commit(self, run: SinkRun) -> None:
        for partition in list(self._open):
            self._finish(partition)
        keep = None if run.partitions is None or not self.config.overwrite else {safe_key(k) for k in run.partitions}
        parts = []
        for name, _, path in self._parts():
            if keep is not None and name not in keep:
                path.unlink()  # an earlier attempt's partition that this run no longer has
            else:
                parts.append(path)
        if not parts and (not self.config.markers_when_empty or self.ctx.sink_role == "dead_letters"):
            self._withdraw()
            return  # no dead letters: leave nothing behind
        files = [{"name": p.name, **(self._closed.get(p.name) or self._describe(p))} for p in parts]
        manifest = {
            "job": self.ctx.job_name,
            "run_id": self.ctx.run_id,
            "format": self.format.type,
            "records": sum(f["records"] for f in files),
            "files": files,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "_manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        (self.dir / "_SUCCESS").write_bytes(b"")  # last, so its presence means everything above is there

    def abort(self, run: SinkRun) -> None:
        """The attempt may have replaced part of the output: withdraw its success marker."""
        self.close()
        self._withdraw()

    def _withdraw(self) -> None:
        for name in ("_SUCCESS", "_manifest.json"):
            (self.dir / name).unlink(missing_ok=True)

    def close(self) -> None:
        """Files still open were never reported durable: remove them."""
        if not hasattr(self, "_lock"):
            return  # never opened
        with self._lock:
            open_files, self._open = list(self._open.values()), {}
        for f in open_files:
            f.handle.close()
            f.tmp.unlink(missing_ok=True)

    def _describe(self, path: Path) -> dict[str, Any]:
        """Records, bytes and checksum of a part file written by another process or an earlier attempt."""
        sha, size = hashlib.sha256(), 0
        with open(path, "rb") as raw:
            for block in iter(lambda: raw.read(1 << 20), b""):
                sha.update(block)
                size += len(block)
            raw.seek(0)
            records = self.format.count(open_reader(raw, detect(path.name)) if self.format.text else raw)
        return {"records": records, "bytes": size, "sha256": sha.hexdigest()}


__all__ = ["FileSink", "FileSinkConfig", "FileSource", "FileSourceConfig"]
