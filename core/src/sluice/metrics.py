"""Run counters and the run summary whose counts must reconcile.

The invariant: ``read + created == written + filtered + dead_lettered (+ in_flight after a failure)``.
``created`` counts records a transform made that were not in its input (aggregate groups).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class Metrics:
    """Thread-safe counters for one run. Updated per batch, not per record, to stay off the hot path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.read = 0
        self.written = 0
        self.created = 0
        self.retries = 0
        self.filtered: Counter[str] = Counter()
        self.dead_lettered: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        """Add to a built-in counter (read, written, created, retries) or a plugin counter."""
        with self._lock:
            if name in ("read", "written", "created", "retries"):
                setattr(self, name, getattr(self, name) + n)
            else:
                self.counters[name] += n

    def add_filtered(self, step: str, n: int) -> None:
        if n:
            with self._lock:
                self.filtered[step] += n

    def add_dead(self, stage: str, n: int) -> None:
        if n:
            with self._lock:
                self.dead_lettered[stage] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "read": self.read,
                "written": self.written,
                "created": self.created,
                "retries": self.retries,
                "filtered": dict(self.filtered),
                "dead_lettered": dict(self.dead_lettered),
                "counters": dict(self.counters),
            }


@dataclass
class PartitionFailure:
    """A partition that did not finish: where it stopped and why."""

    partition: str
    error: str
    checkpoint: Any = None
    seq: int | None = None
    bug: bool = False  # a programming error in a component, not a failure outside


@dataclass
class RunSummary:
    """What a run did. ``reconciled`` tells whether every record read is accounted for."""

    job: str
    run_id: str
    status: str
    read: int
    written: int
    created: int
    filtered: dict[str, int]
    dead_lettered: dict[str, int]
    retries: int
    duration_s: float
    partitions: int = 0
    partitions_done: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    failures: list[PartitionFailure] = field(default_factory=list)
    error: str | None = None
    error_rate_threshold: float = 0.0
    keys: list[str] = field(default_factory=list)  # partition keys written (what commit keeps)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # the sinks' report()s

    def judge(self, *, rate: bool = True, dead_letters_in: str = "") -> None:
        """Set ``status`` and ``error`` from the counts: the one place a run's outcome is decided.

        An error already set (a failed partition) stands; else the error rate over
        ``error_rate_threshold`` fails the run (``rate=False`` for a step of a staged run, whose
        rate is judged once over all steps), and so do counts that do not reconcile.
        """
        if self.error is None and rate and self.over_threshold:
            where = f"; dead letters are in {dead_letters_in}" if dead_letters_in else ""
            self.error = (f"error rate {self.error_rate:.2%} ({self.dead_lettered_total} dead letters / "
                          f"{self.read} records read) exceeds error_rate_threshold {self.error_rate_threshold:.2%}"
                          f"{where}")
        if self.error is None and not self.reconciled:
            self.error = f"counts do not reconcile: {self.in_flight} records unaccounted for"
        self.status = "failed" if self.error is not None else "succeeded"

    @property
    def filtered_total(self) -> int:
        return sum(self.filtered.values())

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    @property
    def in_flight(self) -> int:
        """Records read but neither written, filtered nor dead-lettered: re-read on ``--resume``."""
        return self.read + self.created - self.written - self.filtered_total - self.dead_lettered_total

    @property
    def reconciled(self) -> bool:
        return self.in_flight == 0

    @property
    def over_threshold(self) -> bool:
        """Dead letters exceed ``error_rate_threshold`` of the records read: the run fails."""
        return self.error_rate > self.error_rate_threshold

    @property
    def error_rate(self) -> float:
        return self.dead_lettered_total / self.read if self.read else 0.0

    @property
    def docs_per_s(self) -> float:
        return self.written / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "run_id": self.run_id,
            "status": self.status,
            "read": self.read,
            "written": self.written,
            "created": self.created,
            "filtered": self.filtered,
            "filtered_total": self.filtered_total,
            "dead_lettered": self.dead_lettered,
            "dead_lettered_total": self.dead_lettered_total,
            "in_flight": self.in_flight,
            "reconciled": self.reconciled,
            "retries": self.retries,
            "error_rate": round(self.error_rate, 6),
            "error_rate_threshold": self.error_rate_threshold,
            "duration_s": round(self.duration_s, 3),
            "docs_per_s": round(self.docs_per_s, 1),
            "partitions": self.partitions,
            "partitions_done": self.partitions_done,
            "counters": self.counters,
            "failures": [f.__dict__ for f in self.failures],
            "error": self.error,
        }
