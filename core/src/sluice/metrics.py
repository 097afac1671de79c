"""Run counters and the run summary whose counts must reconcile.

The invariant: ``read + created == written + filtered + dead_lettered (+ in_flight after a failure)``.
``created`` counts records a transform made that were not in its input (aggregate groups).

Besides the run's totals, ``Metrics`` keeps what operators chart: retries by the component that
made them, a histogram of each stage's time per batch, and each partition's counts and time. All
of it is updated per batch (or per retry), never per record.
"""

from __future__ import annotations

import threading
import time
from array import array
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

STAGES = ("source", "transform", "sink")
"""The stages a batch's time is measured in: reading it, transforming it, writing it."""
COMPONENTS = ("source", "transform", "destination", "dead_letter", "checkpoints")
"""Where retries are attributed, named as in the job file; ``other`` holds retries made where no
component is known (a plugin's own threads, setting up and committing the run)."""
OTHER = "other"
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the batch-time histogram: a batch takes from a millisecond (a fast
transform) to tens of seconds (a bulk request under load)."""
RECENT = 4096  # the latest batch times kept per stage, for exporters that send each one (StatsD)

_acting = threading.local()


class acting:
    """Attribute the retries this thread counts to ``component`` while the block runs.

    The pipeline's threads say which component they are calling, so a retry counted through
    ``Metrics.add("retries")`` (the engine's ``retry()``, or a plugin's ``retry_call`` with
    ``ctx.metrics``) lands on that component. A plain class rather than a generator context
    manager: it is entered a few times per batch.
    """

    __slots__ = ("component", "previous")

    def __init__(self, component: str) -> None:
        self.component = component
        self.previous: str | None = None

    def __enter__(self) -> None:
        self.previous = getattr(_acting, "component", None)
        _acting.component = self.component

    def __exit__(self, *exc: object) -> None:
        _acting.component = self.previous


def acting_component() -> str:
    """The component this thread is working for (``other`` when none said)."""
    return getattr(_acting, "component", None) or OTHER


@dataclass(frozen=True)
class Histogram:
    """A snapshot of one stage's batch times: counts per bucket, their sum, and the latest values.

    ``counts`` has one entry per bound of ``bounds`` plus one for the values above the last;
    ``recent`` holds the latest observations, oldest first (at most ``RECENT``), so an exporter of
    individual timings sends those since its last export (``count`` tells how many there were).
    """

    bounds: tuple[float, ...] = BATCH_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(BATCH_BUCKETS) + 1)
    sum: float = 0.0
    count: int = 0
    recent: tuple[float, ...] = ()

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)``, ending with ``(inf, count)``: Prometheus' buckets."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def merged(self, other: Histogram) -> Histogram:
        """Both histograms' observations (of several engines of one run). The latest values are
        kept in the order given: exact for one engine; for engines running at once (steps of a
        staged run) the newest values may interleave."""
        if not other.count:
            return self
        if not self.count:
            return other
        return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
                         self.sum + other.sum, self.count + other.count, (self.recent + other.recent)[-RECENT:])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: count, sum and the cumulative buckets by upper bound (``"+Inf"`` last)."""
        return {"count": self.count, "sum": round(self.sum, 6),
                "buckets": {("+Inf" if b == float("inf") else repr(b)): n for b, n in self.cumulative()}}


class Timings:
    """One stage's batch times while a run goes on: a histogram and a ring of the latest values."""

    __slots__ = ("_count", "_counts", "_lock", "_ring", "_sum")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * (len(BATCH_BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0
        self._ring = array("d", bytes(8 * RECENT))

    def observe(self, seconds: float) -> None:
        i = bisect_left(BATCH_BUCKETS, seconds)  # the first bound >= seconds: Prometheus' "le"
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds
            self._ring[self._count % RECENT] = seconds
            self._count += 1

    def snapshot(self) -> Histogram:
        with self._lock:
            n, ring = self._count, self._ring.tolist()
            counts, total = tuple(self._counts), self._sum
        start = n % RECENT
        recent = ring[:n] if n <= RECENT else ring[start:] + ring[:start]
        return Histogram(BATCH_BUCKETS, counts, total, n, tuple(recent))


@dataclass(slots=True)
class PartitionStats:
    """One partition's counts and time in this run.

    Each count is written by one of the partition's pipeline threads (``read`` by the reader,
    ``filtered`` and ``created`` by the transformer, ``written`` and ``dead`` by the writer), once
    per batch, so they need no lock; a reader from another thread may see them a batch behind.
    ``filtered`` is per batch net of records the same batch's transforms created.
    """

    read: int = 0
    written: int = 0
    filtered: int = 0
    created: int = 0
    dead: int = 0
    started: float | None = None  # time.monotonic()
    ended: float | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def end(self) -> None:
        self.ended = time.monotonic()

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def to_dict(self) -> dict[str, Any]:
        duration = self.duration_s
        return {"read": self.read, "written": self.written, "filtered": self.filtered, "created": self.created,
                "dead_lettered": self.dead, "duration_s": round(duration, 3) if duration is not None else None}


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
        self.retries_by: Counter[str] = Counter()
        self.timings = {stage: Timings() for stage in STAGES}
        self.partitions: dict[str, PartitionStats] = {}

    def add(self, name: str, n: int = 1, *, component: str | None = None) -> None:
        """Add to a built-in counter (read, written, created, retries) or a plugin counter.

        Retries go to ``component``, else to the one this thread is ``acting`` for."""
        with self._lock:
            if name == "retries":
                self.retries += n
                self.retries_by[component or acting_component()] += n
            elif name in ("read", "written", "created"):
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

    def time_batch(self, stage: str, seconds: float) -> None:
        """One batch took ``seconds`` in ``stage`` (source, transform, sink)."""
        self.timings[stage].observe(seconds)

    def partition(self, key: str) -> PartitionStats:
        """The counts of partition ``key`` (made on first use; the pipeline updates them)."""
        with self._lock:
            stats = self.partitions.get(key)
            if stats is None:
                stats = self.partitions[key] = PartitionStats()
            return stats

    def batch_seconds(self) -> dict[str, Histogram]:
        """Each stage's batch-time histogram now (every stage, so an export of a run that timed
        no batch replaces the last run's times)."""
        return {stage: t.snapshot() for stage, t in self.timings.items()}

    def snapshot(self) -> dict[str, Any]:
        """The counts now (cheap: progress lines read it several times a second)."""
        with self._lock:
            return {
                "read": self.read,
                "written": self.written,
                "created": self.created,
                "retries": self.retries,
                "retries_by": dict(self.retries_by),
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
    retries_by: dict[str, int] = field(default_factory=dict)  # retries by component (see COMPONENTS)
    batch_seconds: dict[str, Histogram] = field(default_factory=dict)  # each stage's time per batch
    partition_stats: dict[str, PartitionStats] = field(default_factory=dict)  # partitions this run worked on

    def take_details(self, metrics: Metrics) -> None:
        """Copy from the run's metrics what the totals do not say: retries by component, the time
        per batch of each stage, and each partition's counts and time. Retries are taken again,
        with those of the commit after the counts were first summed up."""
        with metrics._lock:
            self.retries, self.retries_by = metrics.retries, dict(metrics.retries_by)
            self.partition_stats = dict(metrics.partitions)
        self.batch_seconds = metrics.batch_seconds()

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
            "retries_by": self.retries_by,
            "error_rate": round(self.error_rate, 6),
            "error_rate_threshold": self.error_rate_threshold,
            "duration_s": round(self.duration_s, 3),
            "docs_per_s": round(self.docs_per_s, 1),
            "partitions": self.partitions,
            "partitions_done": self.partitions_done,
            "counters": self.counters,
            "batch_seconds": {stage: h.to_dict() for stage, h in self.batch_seconds.items()},
            "failures": [f.__dict__ for f in self.failures],
            "error": self.error,
        }
