"""Local JSON Lines files (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``) as a source and a sink.

The sink doubles as the local dead-letter store and as a staging area: files are written under a
temporary name and renamed when complete, named deterministically by partition and batch sequence,
so a re-run or a resumed run rewrites the same files instead of adding new ones.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import io
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
from ..lines import dumps_lines, iter_lines, parse_batches
from ..records import Batch, Partition, WriteResult, safe_key

SUFFIXES = (".jsonl", ".ndjson", ".json")
_PART = re.compile(r"part-(?P<partition>.+)-(?P<seq>\d{5,})\.jsonl(?:\.gz|\.zst)?\Z")


def _is_data_file(name: str) -> bool:
    base = name
    for ext in (".gz", ".gzip", ".zst", ".zstd"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.endswith(SUFFIXES)


class JsonlSourceConfig(ComponentConfig):
    """Where to read: a file, a directory (read recursively) or a glob pattern."""

    path: str = Field(description="File, directory or glob (e.g. data/**/*.jsonl.gz).")
    compression: Literal["auto", "none", "gzip", "zstd"] = Field(
        "auto", description="auto: by extension (.gz, .zst)."
    )


class JsonlSource(Source):
    """Reads local JSON Lines files, one partition per file; the checkpoint is the line count."""

    type = "jsonl"
    Config = JsonlSourceConfig
    config: JsonlSourceConfig

    def describe(self) -> str:
        return self.config.path

    def partitions(self) -> list[Partition]:
        path = self.config.path
        if globlib.has_magic(path):
            base = Path(path.split("*")[0].rsplit("?", 1)[0]).parent if "/" in path else Path(".")
            files = sorted(Path(p) for p in globlib.glob(path, recursive=True) if Path(p).is_file())
        elif Path(path).is_dir():
            base = Path(path)
            files = sorted(p for p in base.rglob("*") if p.is_file() and _is_data_file(p.name))
        elif Path(path).is_file():
            base, files = Path(path).parent, [Path(path)]
        else:
            raise PermanentError(f"jsonl source: no such file or directory: {path}")
        return [Partition(key=str(f.relative_to(base)) if f.is_relative_to(base) else f.name,
                          spec={"path": str(f.resolve())}) for f in files]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        path = partition.spec["path"]
        compression: Compression = detect(path) if self.config.compression == "auto" else self.config.compression
        skip = int(checkpoint or 0)
        consumed = skip
        try:
            with open(path, "rb") as raw:
                stream = open_reader(raw, compression)
                batches = parse_batches(iter_lines(stream), self.ctx.runtime.batch_size, skip=skip,
                                        where={"file": path})
                for records, dead, consumed in batches:
                    yield Batch(records, checkpoint=consumed, dead_letters=dead)
        except (EOFError, OSError, ValueError) as exc:
            # gzip/zstd raise these for truncated or corrupt data; the lines before it were delivered
            raise PermanentError(f"jsonl source: {path}: cannot read past line {consumed}: "
                                 f"{type(exc).__name__}: {exc}") from None


class JsonlSinkConfig(ComponentConfig):
    """Where and how to write part files."""

    path: str = Field(description="Output directory (templated, e.g. out/date={{ ds }}).")
    compression: Compression = Field("none", description="none, gzip or zstd.")
    max_records_per_file: int = Field(100_000, ge=1, description="Roll over to a new part file after this many.")
    overwrite: bool = Field(
        True, description="Commit removes part files of partitions the run no longer has; false: leave them "
                          "(several jobs share the folder). A partition written again always replaces its own."
    )
    markers_when_empty: bool = Field(True, description="Write _SUCCESS and _manifest.json even with no records.")


@dataclass
class _OpenFile:
    name: str
    tmp: Path
    handle: BinaryIO
    compressor: Any
    records: int = 0
    bytes: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)


class JsonlSink(Sink):
    """Writes ``part-{partition}-{seq:05d}.jsonl[.gz|.zst]`` files, then ``_manifest.json`` and ``_SUCCESS``.

    Two-phase: any number of instances (processes) write different partitions into one folder;
    ``commit`` lists the folder, so it works from a fresh instance that wrote nothing.
    """

    type = "jsonl"
    Config = JsonlSinkConfig
    config: JsonlSinkConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self.dir = Path(self.config.path)
        self._open: dict[str, _OpenFile] = {}
        self._closed: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError(f"jsonl sink: path {self.dir} exists and is not a directory")
        self.started = False

    def _parts(self) -> list[tuple[str, int, Path]]:
        """``(partition, seq, path)`` of every part file in the folder."""
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
        chunk = f.compressor.compress(dumps_lines(batch.records))
        f.handle.write(chunk)
        f.sha256.update(chunk)
        f.bytes += len(chunk)
        f.records += len(batch.records)
        durable = False
        if f.records >= self.config.max_records_per_file:
            self._finish(batch.partition)
            durable = True
        return WriteResult(written=len(batch.records), durable=durable)

    def finish_partition(self, partition: str) -> WriteResult:
        if partition in self._open:
            self._finish(partition)
        return WriteResult()

    def _start(self, partition: str, seq: int) -> _OpenFile:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{safe_key(partition)}-{seq:05d}.jsonl{EXTENSIONS[self.config.compression]}"
        tmp = self.dir / f".{name}.tmp"
        f = _OpenFile(name, tmp, open(tmp, "wb"), compressor(self.config.compression))
        with self._lock:
            self._open[partition] = f
        return f

    def _finish(self, partition: str) -> None:
        with self._lock:
            f = self._open.pop(partition)
        tail = f.compressor.flush()
        f.handle.write(tail)
        f.sha256.update(tail)
        f.bytes += len(tail)
        f.handle.close()
        os.replace(f.tmp, self.dir / f.name)  # atomic: a part file is complete or absent
        with self._lock:
            self._closed[f.name] = {"records": f.records, "bytes": f.bytes, "sha256": f.sha256.hexdigest()}

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
        files = [{"name": p.name, **(self._closed.get(p.name) or _describe(p))} for p in parts]
        manifest = {
            "job": self.ctx.job_name,
            "run_id": self.ctx.run_id,
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


def _describe(path: Path) -> dict[str, Any]:
    """Records, bytes and checksum of a part file written by an earlier attempt of this run."""
    data = path.read_bytes()  # one read serves the checksum and the count
    records = sum(1 for line in iter_lines(open_reader(io.BytesIO(data), detect(path.name))) if line.strip())
    return {"records": records, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
