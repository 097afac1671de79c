"""Small components for the metrics and history tests: numbered records, slow, failing or retrying
on demand, and an in-memory sink that fails transiently (so the engine retries it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from sluice import (
    Batch,
    ComponentConfig,
    Partition,
    PermanentError,
    RecordTransform,
    Reject,
    Sink,
    Source,
    Transform,
    TransientError,
    WriteResult,
    hookimpl,
    retry_call,
)


class NumbersConfig(ComponentConfig):
    partitions: int = Field(2, description="partitions p0, p1, ...")
    records: int = Field(100, description="records per partition, numbered n = 0, 1, ...")
    delay_s: float = Field(0.0, description="sleep before each batch")
    fail_partition: str | None = Field(None, description="this partition fails...")
    fail_at: int = Field(0, description="...when it reaches record n")
    retries: int = Field(0, description="transient failures of each partition's first call, retried with retry_call")


class Numbers(Source):
    """``{"p", "n"}`` records; the checkpoint is the next n."""

    type = "numbers"
    Config = NumbersConfig
    config: NumbersConfig

    def partitions(self) -> list[Partition]:
        return [Partition(f"p{i}", {"i": i}) for i in range(self.config.partitions)]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        n, size = int(checkpoint or 0), self.ctx.runtime.batch_size
        if self.config.retries:  # a plugin retrying its own call, counted through ctx.metrics
            retry_call(failing(self.config.retries), self.ctx.retry, metrics=self.ctx.metrics)
        while n < self.config.records:
            if partition.key == self.config.fail_partition and n >= self.config.fail_at:
                raise PermanentError(f"source broke in {partition.key} at n={n}")
            time.sleep(self.config.delay_s)
            end = min(n + size, self.config.records)
            yield Batch([{"p": partition.key, "n": i} for i in range(n, end)], checkpoint=end)
            n = end


class EveryConfig(ComponentConfig):
    every: int = Field(description="act on records whose n is a multiple of this")


class DropEvery(RecordTransform):
    """Filters records whose n is a multiple of ``every``."""

    type = "drop_every"
    Config = EveryConfig
    config: EveryConfig

    def process(self, record: dict[str, Any]) -> dict[str, Any] | None:
        return None if record["n"] % self.config.every == 0 else record


class RejectEvery(RecordTransform):
    """Dead-letters records whose n is a multiple of ``every``."""

    type = "reject_every"
    Config = EveryConfig
    config: EveryConfig

    def process(self, record: dict[str, Any]) -> dict[str, Any] | None:
        if record["n"] % self.config.every == 0:
            raise Reject(f"n={record['n']} is a multiple of {self.config.every}")
        return record


def failing(times: int) -> Any:
    """A call that raises TransientError ``times`` times, then succeeds."""
    left = [times]

    def call() -> None:
        if left[0]:
            left[0] -= 1
            raise TransientError("not yet")

    return call


class RetryEachBatch(Transform):
    """Passes batches through, after one retried call per batch (retry_call with ctx.metrics)."""

    type = "retry_each_batch"

    def apply(self, batch: Batch) -> Batch:
        retry_call(failing(1), self.ctx.retry, metrics=self.ctx.metrics)
        return batch


class FlakyConfig(ComponentConfig):
    name: str = Field("default", description="the store in STORES")
    fail_first_write: bool = Field(False, description="each partition's first write raises TransientError")
    reported_retries: int = Field(0, description="retries each write reports in WriteResult.retries")


STORES: dict[str, list[dict[str, Any]]] = {}


class Flaky(Sink):
    """Keeps records in ``STORES[name]``; fails each partition's first write transiently on demand."""

    type = "flaky"
    Config = FlakyConfig
    config: FlakyConfig

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.store = STORES.setdefault(self.config.name, [])
        self.failed: set[str] = set()

    def write(self, batch: Batch) -> WriteResult:
        if self.config.fail_first_write and batch.partition not in self.failed:
            self.failed.add(batch.partition)
            raise TransientError(f"{self.config.name}: try {batch.partition} again")
        self.store.extend(batch.records)
        return WriteResult(written=len(batch.records), retries=self.config.reported_retries)


@hookimpl
def sluice_sources() -> list[type]:
    return [Numbers]


@hookimpl
def sluice_transforms() -> list[type]:
    return [DropEvery, RejectEvery, RetryEachBatch]


@hookimpl
def sluice_sinks() -> list[type]:
    return [Flaky]
