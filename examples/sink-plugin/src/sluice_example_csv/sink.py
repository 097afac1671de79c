"""A complete Sluice sink: CSV files in a folder, written in two phases (the README's sink contract)."""

from __future__ import annotations

import csv
import os
import re
import threading
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import Field

from sluice import Batch, ComponentConfig, DeadLetter, RunContext, Sink, SinkRun, WriteResult
from sluice.records import safe_key

PART = re.compile(r"part-(?P<partition>.+)-(?P<seq>\d{5,})\.csv\Z")


class CsvSinkConfig(ComponentConfig):
    """Where the CSV files go and which record fields become columns."""

    path: str = Field(description="Output folder (templated, e.g. out/csv/date={{ ds }}).")
    columns: list[str] = Field(min_length=1, description="Record fields written as columns, in this order.")
    required: list[str] = Field(default_factory=list, description="Fields a record must have; one without "
                                                                  "them becomes a dead letter.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="The field separator.")


class CsvSink(Sink):
    """Writes ``part-{partition}-{seq:05d}.csv`` (a header row, then one row per record) and, at
    commit, ``_SUCCESS``.

    - One instance serves several partitions from several threads: each partition has its own open
      file, kept in a dict under a lock; calls for one partition come in order from one thread.
    - Rows sit in an open temporary file, so ``write`` reports them not durable; the engine saves
      the partition's checkpoint once ``finish_partition`` has renamed the file into place. A resumed
      partition starts again after its last saved checkpoint, and ``start_partition`` first removes
      the files it wrote from there on.
    - ``commit`` lists the folder, so any instance, in any process, can commit the run.
    """

    type = "csv"
    Config = CsvSinkConfig
    config: CsvSinkConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self.folder = Path(self.config.path)
        self.files: dict[str, tuple[Path, IO[str], Any]] = {}  # partition -> (temporary path, file, writer)
        self.lock = threading.Lock()

    def describe(self) -> str:
        return str(self.folder)

    def _parts(self) -> list[tuple[Path, str, int]]:
        found = [(p, PART.match(p.name)) for p in self.folder.glob("part-*.csv")] if self.folder.is_dir() else []
        return [(p, m["partition"], int(m["seq"])) for p, m in found if m]

    def start_partition(self, partition: str, seq: int) -> None:
        for path, name, file_seq in self._parts():
            if name == safe_key(partition) and file_seq >= seq:
                path.unlink()

    def write(self, batch: Batch) -> WriteResult:
        rows, dead = [], []
        for record in batch.records:
            missing = [f for f in self.config.required if record.get(f) in (None, "")]
            if missing:
                dead.append(DeadLetter(record, f"missing required field(s) {missing}", "MissingField",
                                       {"fields": missing}))
            else:
                rows.append([_cell(record.get(column)) for column in self.config.columns])
        if rows:
            self._writer(batch.partition, batch.seq).writerows(rows)
        return WriteResult(written=len(rows), dead_letters=dead, durable=batch.partition not in self.files)

    def _writer(self, partition: str, seq: int) -> Any:
        with self.lock:
            if partition not in self.files:
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = self.folder / f".part-{safe_key(partition)}-{seq:05d}.csv.tmp"
                handle = open(tmp, "w", newline="", encoding="utf-8")  # closed in finish_partition or close
                writer = csv.writer(handle, delimiter=self.config.delimiter)
                writer.writerow(self.config.columns)
                self.files[partition] = (tmp, handle, writer)
            return self.files[partition][2]

    def finish_partition(self, partition: str) -> WriteResult:
        with self.lock:
            entry = self.files.pop(partition, None)
        if entry is not None:
            tmp, handle, _ = entry
            handle.close()
            os.replace(tmp, tmp.with_name(tmp.name[1:].removesuffix(".tmp")))  # complete, or absent
        return WriteResult()

    def commit(self, run: SinkRun) -> None:
        for partition in list(self.files):
            self.finish_partition(partition)
        keep = None if run.partitions is None else {safe_key(k) for k in run.partitions}
        for path, name, _ in self._parts():
            if keep is not None and name not in keep:
                path.unlink()  # an earlier attempt's partition this run no longer has
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "_SUCCESS").write_bytes(b"")

    def abort(self, run: SinkRun) -> None:
        self.close()
        (self.folder / "_SUCCESS").unlink(missing_ok=True)  # part of the output may have been replaced

    def close(self) -> None:
        with self.lock:
            entries, self.files = list(self.files.values()), {}
        for tmp, handle, _ in entries:  # never reported durable: discard
            handle.close()
            tmp.unlink(missing_ok=True)


def _cell(value: Any) -> str:
    """A CSV cell: text as it is, nested values as JSON, null as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
