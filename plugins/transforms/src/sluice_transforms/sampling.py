"""``sample``: keep a deterministic fraction of records."""

from __future__ import annotations

import hashlib

from pydantic import Field, model_validator

from sluice import Batch, ComponentConfig, RunContext, Transform

from .keys import key_function

SCALE = 2**64


class SampleConfig(ComponentConfig):
    """How many records to keep, and what decides which."""

    rate: float | None = Field(None, gt=0, le=1, description="Fraction of records to keep (0 < rate <= 1).")
    every: int | None = Field(None, ge=1, description="Keep about one record in N (the same as rate: 1/N).")
    key: list[str] = Field(default_factory=list, description="Field paths whose values decide (e.g. [user_id] keeps "
                                                             "all or none of a user's records). Empty: the whole "
                                                             "record.")
    seed: str = Field("sluice", description="Changes which records are picked; the same seed picks the same ones.")

    @model_validator(mode="after")
    def _one_of(self) -> SampleConfig:
        if (self.rate is None) == (self.every is None):
            raise ValueError("give exactly one of 'rate' or 'every'")
        return self


class Sample(Transform):
    """Keeps a record when the keyed hash of its key falls under ``rate``: re-runs and resumed runs
    keep exactly the same records, in any partitioning; the others are counted as filtered."""

    type = "sample"
    Config = SampleConfig
    config: SampleConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        rate = self.config.rate if self.config.rate is not None else 1 / (self.config.every or 1)
        self._threshold = int(rate * SCALE)
        self._key = key_function(self.config.key)
        self._seed = hashlib.blake2b(self.config.seed.encode(), digest_size=16).digest()

    def apply(self, batch: Batch) -> Batch:
        if self._threshold >= SCALE:
            return batch
        key, seed, threshold = self._key, self._seed, self._threshold
        blake, from_bytes = hashlib.blake2b, int.from_bytes
        batch.records = [r for r in batch.records
                         if from_bytes(blake(key(r), digest_size=8, key=seed).digest(), "big") < threshold]
        return batch
