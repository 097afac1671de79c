"""Small components for the metrics and history tests: numbered records, slow or failing on demand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pydantic import Field

from sluice import Batch, ComponentConfig, Partition, PermanentError, RecordTransform, Reject, Source, hookimpl


class NumbersConfig(ComponentConfig):
    partitions: int = Field(2, description="partitions p0, p1, ...")
    records: int = Field(100, description="records per partition, numbered n = 0, 1, ...")
    delay_s: float = Field(0.0, description="sleep before each batch")
    fail_partition: str | None = Field(None, description="this partition fails...")
    fail_at: int = Field(0, description="...when it reaches record n")


class Numbers(Source):
    """``{"p", "n"}`` records; the checkpoint is the next n."""

    type = "numbers"
    Config = NumbersConfig
    config: NumbersConfig

    def partitions(self) -> list[Partition]:
        return [Partition(f"p{i}", {"i": i}) for i in range(self.config.partitions)]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        n, size = int(checkpoint or 0), self.ctx.runtime.batch_size
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


@hookimpl
def sluice_sources() -> list[type]:
    return [Numbers]


@hookimpl
def sluice_transforms() -> list[type]:
    return [DropEvery, RejectEvery]
