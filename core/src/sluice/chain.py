"""Applying the transform chain to a batch, with per-step accounting and dead-letter stamping.

Counts are derived per step from what went in and what came out, so every transform is accounted
for without reporting anything itself: ``in - rejected - out`` were filtered (or merged into an
aggregate); records beyond ``in - rejected`` were created.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .components import Transform
from .errors import blame
from .records import Batch, Record

if TYPE_CHECKING:
    from .config import Job


def step_label(index: int, type_name: str) -> str:
    """How a step is named in summaries and dead letters: ``steps[1]:cast``."""
    return f"steps[{index}]:{type_name}"


@dataclass
class ChainCounts:
    """What the chain did to one batch."""

    filtered: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)
    created: int = 0

    def merge(self, other: ChainCounts) -> None:
        self.filtered.update(other.filtered)
        self.dead.update(other.dead)
        self.created += other.created


class Chain:
    """The job's transform steps in order."""

    def __init__(self, steps: list[Transform], types: list[str]) -> None:
        self.steps = steps
        self.labels = [step_label(i, t) for i, t in enumerate(types)]
        self.types = types

    @classmethod
    def for_job(cls, job: Job) -> Chain:
        """The job's steps, built (not opened)."""
        return cls([spec.build() for spec in job.steps], [spec.type for spec in job.steps])

    def where(self, index: int) -> str:
        """A step as the job file names it: ``transform.steps[1] (type: cast)``."""
        return f"transform.steps[{index}] (type: {self.types[index]})"

    def __bool__(self) -> bool:
        return bool(self.steps)

    def apply(self, batch: Batch, start: int = 0) -> tuple[Batch, ChainCounts]:
        """Run steps ``start..`` over ``batch``; new dead letters are stamped with their step."""
        counts = ChainCounts()
        for i in range(start, len(self.steps)):
            n_in, d0 = len(batch.records), len(batch.dead_letters)
            try:
                batch = self.steps[i].apply(batch)
            except Exception as exc:
                blame(exc, self.where(i))
                raise
            new_dead = batch.dead_letters[d0:]
            for dl in new_dead:
                dl.stage, dl.plugin, dl.step = "transform", self.types[i], i
            kept = n_in - len(new_dead)
            out = len(batch.records)
            counts.dead[self.labels[i]] += len(new_dead)
            if out < kept:
                counts.filtered[self.labels[i]] += kept - out
            elif out > kept:
                counts.created += out - kept
        return batch, counts

    def flush(self, partition: str | None) -> tuple[list[Record], list, ChainCounts]:
        """Records every step held back, each passed through the steps after it."""
        counts = ChainCounts()
        records: list[Record] = []
        dead: list = []
        for i, step in enumerate(self.steps):
            try:
                held = step.flush(partition)
            except Exception as exc:
                blame(exc, self.where(i))
                raise
            if not held:
                continue
            counts.created += len(held)
            batch, more = self.apply(Batch(list(held), partition=partition or ""), start=i + 1)
            counts.merge(more)
            records.extend(batch.records)
            dead.extend(batch.dead_letters)
        return records, dead, counts

    def state_scope(self) -> str:
        """The widest state any step keeps: ``batch`` (none), ``partition`` or ``run``."""
        scopes = {getattr(s, "state_scope", lambda: "batch")() for s in self.steps}
        return "run" if "run" in scopes else "partition" if "partition" in scopes else "batch"
