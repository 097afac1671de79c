"""In-memory components for engine tests (pure logic; the plugins test against real servers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field, SecretStr

from sluice import (
    Batch,
    ComponentConfig,
    Partition,
    RecordTransform,
    Reject,
    Sink,
    SinkRun,
    Source,
    Transform,
    TransientError,
    WriteResult,
    hookimpl,
    late_template,
)
from sluice.errors import PermanentError


class CountingConfig(ComponentConfig):
    partitions: int = 2
    records: int = 100
    payload: int = Field(0, description="bytes of filler per record")
    fail_after_batches: int | None = None


class CountingSource(Source):
    """Numbered records ``{"p", "n", "id"}`` in ``partitions`` partitions; checkpoint = next n."""

    type = "counting"
    Config = CountingConfig
    config: CountingConfig
    live = 0  # batches yielded and not yet released (for backpressure tests)
    max_live = 0
    lock = threading.Lock()

    def partitions(self) -> list[Partition]:
        return [Partition(f"p{i}", {"i": i}) for i in range(self.config.partitions)]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        n = int(checkpoint or 0)
        size = self.ctx.runtime.batch_size
        yielded = 0
        filler = "x" * self.config.payload
        while n < self.config.records:
            if self.config.fail_after_batches is not None and yielded >= self.config.fail_after_batches:
                raise PermanentError(f"source broke in {partition.key} at n={n}")
            end = min(n + size, self.config.records)
            records = [{"p": partition.key, "n": i, "id": f"{partition.key}-{i}", "pad": filler} for i in range(n, end)]
            n = end
            yielded += 1
            with CountingSource.lock:
                CountingSource.live += 1
                CountingSource.max_live = max(CountingSource.max_live, CountingSource.live)
            yield Batch(records, checkpoint=n)


class MemorySinkConfig(ComponentConfig):
    name: str = "default"
    delay_s: float = 0.0
    fail_on_seq: int | None = None
    fail_times: int = 1_000_000
    transient: bool = False
    reject_field: str | None = None
    lose_one: bool = False
    buffer: bool = False
    bug_on_seq: int | None = None  # a programming error in write (iterating the batch itself)
    fail_prepare: int = 0  # prepare fails (transiently) this many times


STORES: dict[str, dict[str, Any]] = {}


class MemorySink(Sink):
    """Stores records by id in ``STORES[name]``; can be slow, fail, reject or buffer on purpose."""

    type = "memory"
    Config = MemorySinkConfig
    config: MemorySinkConfig

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.store = STORES.setdefault(self.config.name, {"records": {}, "writes": 0, "failures": 0,
                                                          "committed": False, "aborted": False, "batches": []})
        self.buffered: dict[str, list[dict[str, Any]]] = {}

    def prepare(self, run: SinkRun) -> None:
        if self.store.get("prepare_failures", 0) < self.config.fail_prepare:
            self.store["prepare_failures"] = self.store.get("prepare_failures", 0) + 1
            raise TransientError("sink not ready yet")

    def write(self, batch: Batch) -> WriteResult:
        time.sleep(self.config.delay_s)
        self.store.setdefault("calls", 0)
        self.store["calls"] += 1
        if batch.seq == self.config.bug_on_seq:
            return _count_records(batch)
        with CountingSource.lock:
            CountingSource.live -= 1
        if self.config.fail_on_seq is not None and batch.seq == self.config.fail_on_seq \
                and self.store["failures"] < self.config.fail_times:
            self.store["failures"] += 1
            with CountingSource.lock:
                CountingSource.live += 1  # the engine will hand the same batch again
            raise (TransientError if self.config.transient else PermanentError)(f"sink refused batch {batch.seq}")
        self.store["writes"] += 1
        result = WriteResult(durable=not self.config.buffer)
        for record in batch.records[: len(batch.records) - 1 if self.config.lose_one else None]:
            if self.config.reject_field and record.get(self.config.reject_field):
                result.dead_letters.append(_dl(record))
                continue
            if self.config.buffer:
                self.buffered.setdefault(batch.partition, []).append(record)
            else:
                self.store["records"][record["id"]] = record
            result.written += 1
        self.store["batches"].append((batch.partition, batch.seq))
        return result

    def finish_partition(self, partition: str) -> WriteResult:
        for record in self.buffered.pop(partition, []):
            self.store["records"][record["id"]] = record
        return WriteResult()

    def commit(self, run: SinkRun) -> None:
        self.store["committed"] = True

    def abort(self, run: SinkRun) -> None:
        self.store["aborted"] = True


def _count_records(batch: Any) -> Any:
    return WriteResult(written=len([r for r in batch]))  # the bug: a Batch is not iterable


def _dl(record: dict[str, Any]) -> Any:
    from sluice import DeadLetter

    return DeadLetter(record=record, reason="sink said no", error_type="mapper_parsing_exception")


class EveryConfig(ComponentConfig):
    every: int = 10


class DropEvery(RecordTransform):
    """Filters out records whose n is a multiple of ``every``."""

    type = "drop_every"
    Config = EveryConfig
    config: EveryConfig

    def process(self, record: dict[str, Any]) -> dict[str, Any] | None:
        return None if record["n"] % self.config.every == 0 else record


class RejectEvery(RecordTransform):
    """Rejects records whose n is a multiple of ``every``; raises KeyError on n == 7 (a 'bug')."""

    type = "reject_every"
    Config = EveryConfig
    config: EveryConfig

    def process(self, record: dict[str, Any]) -> dict[str, Any] | None:
        if record["n"] == 7:
            return {}["boom"]
        if record["n"] % self.config.every == 0:
            raise Reject(f"n={record['n']} is a multiple of {self.config.every}", "TooRound")
        return record


class CountPerPartition(Transform):
    """Consumes every record and emits one count record per partition at its end (like aggregate)."""

    type = "count_per_partition"
    stateless = False

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def apply(self, batch: Batch) -> Batch:
        with self.lock:
            self.counts[batch.partition] = self.counts.get(batch.partition, 0) + len(batch.records)
        batch.records = []
        return batch

    def flush(self, partition: str | None) -> list[dict[str, Any]]:
        if partition is None:
            return []
        return [{"id": f"count-{partition}", "p": partition, "n": -1, "count": self.counts.pop(partition, 0)}]

    def state_scope(self) -> str:
        return "partition"


class CountAllConfig(ComponentConfig):
    explode: bool = False  # a bug on purpose: divides by zero


class CountAll(Transform):
    """Consumes every record and emits one total at the end of the run (run-wide state)."""

    type = "count_all"
    Config = CountAllConfig
    config: CountAllConfig
    stateless = False

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.total = 0
        self.lock = threading.Lock()

    def apply(self, batch: Batch) -> Batch:
        with self.lock:
            self.total += len(batch.records) // (0 if self.config.explode else 1)
        batch.records = []
        return batch

    def flush(self, partition: str | None) -> list[dict[str, Any]]:
        return [{"id": "total", "n": -1, "count": self.total}] if partition is None else []

    def state_scope(self) -> str:
        return "run"


class Upper(RecordTransform):
    """Adds ``pid`` (the worker process id) and upper-cases ``p``: used for the process pool test."""

    type = "tag_pid"

    def process(self, record: dict[str, Any]) -> dict[str, Any]:
        import os

        record["pid"] = os.getpid()
        return record


@hookimpl
def sluice_sources() -> list[type]:
    return [CountingSource]


@hookimpl
def sluice_sinks() -> list[type]:
    return [MemorySink]


@hookimpl
def sluice_transforms() -> list[type]:
    return [DropEvery, RejectEvery, CountPerPartition, CountAll, Upper]


class StampConfig(ComponentConfig):
    field: str = "stamp"
    value: str = late_template(description="rendered per record")
    token: SecretStr | None = None


class Stamp(RecordTransform):
    """Sets ``field`` from a per-record template."""

    type = "stamp"
    Config = StampConfig
    config: StampConfig

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.render = ctx.compile(self.config.value, "stamp.value")

    def process(self, record: dict[str, Any]) -> dict[str, Any]:
        record[self.config.field] = self.render(record=record)
        return record


@hookimpl(specname="sluice_transforms")
def more_transforms() -> list[type]:
    return [Stamp]
