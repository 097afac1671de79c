"""What a run reports about itself: metrics while it runs, and its record in the history at the end.

The engine calls ``engine_started`` as a run (or a staged run's step) starts, and ``Watch.finished``
once its summary is final; ``stages.finalize`` commits inside ``finalizing``. None of them raises:
an exporter that fails is logged once and the run goes on, and so does a history store that
cannot be written.

A ``Session`` is one run's metrics in this process: its exporters, the engines that count for it,
and a thread that exports every so often. ``sluice run`` opens one before the run (``watch``), so
it spans every step of a ``--staged`` run and can serve ``/metrics`` the whole time; a plain run
started otherwise (``sluice.testing.run_job``, an embedder) gets its own. A step run by an
orchestrator in a process of its own exports only when it fails (the run's status), and finalize
exports the whole run's numbers.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import __version__, history, secrets
from .errors import ConfigError, describe_error
from .exporting import (
    MetricsExporter,
    Sample,
    build_exporters,
    count_samples,
    env_blocks,
    exporter_classes,
    merged_blocks,
    outcome_samples,
)
from .logs import get_logger

if TYPE_CHECKING:
    from .config import Job
    from .engine import Engine
    from .metrics import Histogram, Metrics, RunSummary
    from .stages import StagedRun

_sessions: dict[tuple[str, str], Session] = {}  # sessions `sluice run` opened, by (job, run id)
_lock = threading.Lock()


class Session:
    """One run's exporters and live counts in this process; ``export`` the end, then ``close``.

    Engines ``attach``: a plain run's counts are its own; the steps of a staged run add up as the
    run's summary will (read by the first stage, written by the last, the rest by every step).
    """

    def __init__(self, job: Job, overlay: dict[str, Any] | None = None, *, strict: bool = False) -> None:
        self.job, self.run_id = job.name, job.run_id
        self.started, self.started_at = time.monotonic(), datetime.now(UTC)
        self.log = get_logger().bind(job=job.name, run_id=job.run_id, component="metrics")
        self.engines: list[tuple[Metrics, bool, bool]] = []  # (counters, its reads count, its writes count)
        self.exporters = self._exporters(job, overlay, strict)
        self.failing: set[int] = set()  # exporters whose failure was logged
        self.closed = False
        self._calls = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _exporters(self, job: Job, overlay: dict[str, Any] | None, strict: bool) -> list[MetricsExporter]:
        from .registry import get_registry

        registry = job.registry or get_registry()
        try:
            env = env_blocks()
        except ConfigError as exc:
            if strict:
                raise
            self.log.warning("metrics: ignoring $SLUICE_METRICS", error=str(exc))
            env = {}
        blocks = merged_blocks(env, job.config.metrics, overlay)
        if not blocks:
            return []
        try:
            return build_exporters(blocks, registry)
        except ConfigError as exc:
            if strict:
                raise
            self.log.warning("metrics: not exporting", error="; ".join(exc.problems))
            return []

    # -- live ---------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        """Count ``engine``'s records for this run from now on."""
        stage = engine.dead_letter_prefix if engine.role == "step" else ""
        with _lock:
            self.engines.append((engine.metrics, stage in ("", "extract"), stage in ("", "load")))

    def counts(self) -> dict[str, Any]:
        """The run's counts now (``Metrics.snapshot()`` keys, and ``batch_seconds``), over every
        engine attached: the time per batch of the source from the engines that read the run's
        records, of the sink from those that write them, of the transforms from all."""
        total: dict[str, Any] = {"read": 0, "written": 0, "created": 0, "retries": 0}
        tallies: dict[str, Counter[str]] = {"filtered": Counter(), "dead_lettered": Counter(), "counters": Counter(),
                                            "retries_by": Counter()}
        timings: dict[str, Histogram] = {}
        with _lock:
            engines = list(self.engines)
        for metrics, reads, writes in engines:
            m = metrics.snapshot()
            total["read"] += m["read"] if reads else 0
            total["written"] += m["written"] if writes else 0
            total["created"] += m["created"]
            total["retries"] += m["retries"]
            for key, tally in tallies.items():
                tally.update(m[key])
            for stage, histogram in metrics.batch_seconds().items():
                if (stage != "source" or reads) and (stage != "sink" or writes):
                    timings[stage] = timings[stage].merged(histogram) if stage in timings else histogram
        return {**total, **{key: dict(tally) for key, tally in tallies.items()}, "batch_seconds": timings}

    def samples(self) -> list[Sample]:
        """The run's samples now (records, retries, plugin counters, time so far)."""
        return count_samples(self.job, self.counts(), time.monotonic() - self.started)

    def start(self) -> None:
        """Start every exporter, and the thread that exports while the run lasts."""
        for exporter in self.exporters:
            self._call(exporter, exporter.start, self.samples)
        if any(e.every_s for e in self.exporters):
            self._thread = threading.Thread(target=self._loop, name="sluice-metrics", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        due = {i: time.monotonic() + e.every_s for i, e in enumerate(self.exporters) if e.every_s}
        while not self._stop.wait(max(0.0, min(due.values()) - time.monotonic())):
            now, samples = time.monotonic(), None
            for i, at in due.items():
                if at <= now:
                    exporter = self.exporters[i]
                    samples = samples or self.samples()
                    self._call(exporter, exporter.export, self.job, samples, final=False)
                    due[i] = time.monotonic() + (exporter.every_s or 0)

    # -- the end ------------------------------------------------------------------------------
    def export(self, samples: list[Sample]) -> None:
        """The run's final samples, to every exporter (after the last periodic export)."""
        self._halt()
        for exporter in self.exporters:
            self._call(exporter, exporter.export, self.job, samples, final=True)

    def close(self) -> None:
        """Stop exporting (and serving); forget the session. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._halt()
        for exporter in self.exporters:
            self._call(exporter, exporter.close)
        with _lock:
            if _sessions.get((self.job, self.run_id)) is self:
                del _sessions[(self.job, self.run_id)]

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _call(self, exporter: MetricsExporter, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call an exporter; its first failure is logged, later ones are not, and none is raised."""
        with self._calls:
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                if id(exporter) not in self.failing:
                    self.failing.add(id(exporter))
                    self.log.warning("metrics exporter failed; the run goes on (its later failures in this run "
                                     "are not logged)", exporter=exporter.type, error=secrets.mask(describe_error(exc)))


def watch(job: Job, *, metrics_port: int | None = None) -> Session:
    """Open the session of ``job``'s run in this process (``sluice run``): it spans every step of a
    ``--staged`` run and ends with the run's final export, or at exit. ``metrics_port`` serves
    ``/metrics`` while the run lasts (the ``prometheus`` exporter). Bad settings raise ConfigError."""
    overlay = None
    if metrics_port is not None:
        from .registry import get_registry

        if "prometheus" not in exporter_classes(job.registry or get_registry()):
            raise ConfigError("--metrics-port serves /metrics through the prometheus exporter of sluice-metrics, "
                              "which is not installed (pip install sluice-metrics)")
        overlay = {"prometheus": {"port": metrics_port}}
    session = Session(job, overlay, strict=True)
    with _lock:
        stale = _sessions.get((job.name, job.run_id))
        _sessions[(job.name, job.run_id)] = session
    if stale is not None:  # an earlier run of it in this process that never ended (a step failed)
        stale.close()
    atexit.register(session.close)
    session.start()
    return session


def _held(job: Job) -> Session | None:
    with _lock:
        session = _sessions.get((job.name, job.run_id))
    return session if session is not None and not session.closed else None


class Watch:
    """An engine's part in its run's metrics and history; ``finished`` once its summary is final."""

    def __init__(self, engine: Engine, session: Session | None) -> None:
        self.engine, self.session = engine, session

    def finished(self, summary: RunSummary) -> None:
        """A plain run: record it and export its numbers. A step: only when it failed (the run did)."""
        engine, log = self.engine, get_logger().bind(job=self.engine.job.name, run_id=self.engine.job.run_id)
        try:
            summary.take_details(engine.metrics)
            if engine.role == "run":
                _record(log, *_plain_record(engine, summary), "attempt")
                session = self.session or Session(engine.job)
                partitions = (summary.partitions, summary.partitions_done, len(summary.failures))
                counts = {**summary.to_dict(), "batch_seconds": summary.batch_seconds}
                session.export([*count_samples(engine.job.name, counts, summary.duration_s),
                                *outcome_samples(engine.job.name, summary.status, finished_at=time.time(),
                                                 partitions=partitions)])
                session.close()
            elif summary.status != "succeeded":
                _record(log, *_step_record(engine, summary), "step_failed")
                session = self.session or Session(engine.job)
                session.export(outcome_samples(engine.job.name, "failed", finished_at=time.time()))
                if session is not self.session:
                    session.close()
        except Exception as exc:  # never fail the run for its metrics
            log.warning("metrics and history: the end of the run was not exported", error=describe_error(exc))


def engine_started(engine: Engine) -> Watch:
    """An engine starts: count it in its run's session (opening one for a plain run)."""
    try:
        session = _held(engine.job)
        if session is None and engine.role == "run":
            session = Session(engine.job)
            session.start()
        if session is not None:
            session.attach(engine)
        return Watch(engine, session)
    except Exception as exc:
        get_logger().warning("metrics: not exporting this run", job=engine.job.name, error=describe_error(exc))
        return Watch(engine, None)


@contextlib.contextmanager
def finalizing(staged: StagedRun, summary: RunSummary, plan: dict[str, Any],
               manifests: dict[str, dict[str, dict[str, Any]]]) -> Iterator[None]:
    """Around a staged run's commit: record the run and export its numbers, whatever the verdict
    (a commit that fails makes the run failed)."""
    try:
        yield
    except Exception as exc:
        if summary.status == "succeeded":
            summary.status, summary.error = "failed", describe_error(exc)
        _finalized(staged, summary, plan, manifests)
        raise
    _finalized(staged, summary, plan, manifests)


def _finalized(staged: StagedRun, summary: RunSummary, plan: dict[str, Any],
               manifests: dict[str, dict[str, dict[str, Any]]]) -> None:
    job, log = staged.job, staged.log
    try:
        session = _held(job)
        duration = time.monotonic() - session.started if session else summary.duration_s
        counts = summary.to_dict()
        if session is not None:  # what the steps' manifests do not carry: plugin counters, retries by
            live = session.counts()  # component, the time per batch
            counts.update(counters=live["counters"], retries_by=live["retries_by"],
                          batch_seconds=live["batch_seconds"])
        run = _run_record(job, summary, "staged", duration)
        run.started_at, run.counters = session.started_at if session else None, counts["counters"]
        run.retries_by = counts["retries_by"]
        _record(log, run, _staged_partitions(plan, manifests), "finalize")
        total = len(plan["partitions"])
        exporting = session or Session(job)
        exporting.export([*count_samples(job.name, counts, duration),
                          *outcome_samples(job.name, summary.status, finished_at=time.time(),
                                           partitions=(total, total, 0))])
        exporting.close()
    except Exception as exc:
        log.warning("metrics and history: the end of the run was not exported", error=describe_error(exc))


# -- history records ----------------------------------------------------------------------------
def _record(log: Any, run: history.RunRecord, partitions: list[history.PartitionRecord], mode: history.Mode) -> None:
    try:
        history.record(run, partitions, mode)
    except Exception as exc:
        log.warning("the run was not recorded in the history", history=history.describe(history.location()),
                    error=secrets.mask(describe_error(exc)))


def _where(spec: Any) -> str:
    from .stages import where

    return secrets.mask(where(spec))


def _run_record(job: Job, summary: RunSummary, kind: str, duration_s: float) -> history.RunRecord:
    now = datetime.now(UTC)
    return history.RunRecord(
        job=job.name, run_id=job.run_id, kind=kind, status=summary.status, finished_at=now,
        interval_start=job.interval.start, interval_end=job.interval.end,
        started_at=now - timedelta(seconds=duration_s), duration_s=round(duration_s, 3),
        read=summary.read, written=summary.written, created=summary.created, filtered=summary.filtered_total,
        dead_lettered=summary.dead_lettered_total, retries=summary.retries, retries_by=dict(summary.retries_by),
        filtered_by=dict(summary.filtered),
        dead_lettered_by=dict(summary.dead_lettered), counters=dict(summary.counters),
        error_rate=round(summary.error_rate, 6), error_rate_threshold=summary.error_rate_threshold,
        partitions=summary.partitions, partitions_done=summary.partitions_done, host=socket.gethostname(),
        sluice_version=__version__, destination=_where(job.destination), dead_letters=_where(job.dead_letter),
        error=secrets.mask(summary.error) if summary.error else None,
    )


def _plain_record(engine: Engine, summary: RunSummary) -> tuple[history.RunRecord, list[history.PartitionRecord]]:
    """A plain run and its partitions: each planned one done, failed or not finished (with its
    checkpoint and error), with what this run counted in it and the time it took. A partition
    done by an earlier attempt (``--resume``) has no counts; the records a run-wide transform
    made at the end (``_run``) were read by no partition."""
    from .engine import RUN_PARTITION

    run = _run_record(engine.job, summary, "run", summary.duration_s)
    run.resumed = engine.resume
    failures = {f.partition: f for f in summary.failures}
    partitions = []
    for key in dict.fromkeys([*engine.written_keys(), *failures]):
        failure, stats = failures.get(key), summary.partition_stats.get(key)
        counts: dict[str, Any] = {}
        if stats is not None:
            duration = stats.duration_s
            counts = {"read": None if key == RUN_PARTITION else stats.read, "written": stats.written,
                      "filtered": stats.filtered, "dead_lettered": stats.dead,
                      "duration_s": round(duration, 3) if duration is not None else None}
        if failure is None:
            partitions.append(history.PartitionRecord(key, "done", **counts))
        else:
            status = "not finished" if failure.error.startswith("not finished") else "failed"
            partitions.append(history.PartitionRecord(key, status, checkpoint=failure.checkpoint,
                                                      error=secrets.mask(failure.error), **counts))
    return run, partitions


def _step_record(engine: Engine, summary: RunSummary) -> tuple[history.RunRecord, list[history.PartitionRecord]]:
    """A failed step: its run's open attempt, failed (the counts come with finalize), and the
    partitions that failed in it."""
    stage = engine.dead_letter_prefix or "run"
    run = _run_record(engine.job, summary, "staged", summary.duration_s)
    for name in ("read", "written", "created", "filtered", "dead_lettered", "retries"):
        setattr(run, name, 0)
    run.filtered_by, run.dead_lettered_by, run.counters, run.retries_by, run.error_rate = {}, {}, {}, {}, 0.0
    run.finalized, run.started_at, run.duration_s = False, None, None
    run.error = secrets.mask(f"{stage}: {summary.error}")
    partitions = [history.PartitionRecord(f.partition, "failed", checkpoint=f.checkpoint,
                                          error=secrets.mask(f"{stage}: {f.error}")) for f in summary.failures]
    return run, partitions


def _staged_partitions(plan: dict[str, Any],
                       manifests: dict[str, dict[str, dict[str, Any]]]) -> list[history.PartitionRecord]:
    """Each partition of a finalized staged run from its steps' manifests: read by the first stage,
    written by the last, filtered and dead-lettered by any, the time of its steps added up."""
    stages = plan["stages"]
    rows = []
    for key in sorted({task for stage in stages for task in manifests[stage]}):
        per = {stage: manifests[stage][key]["counts"] for stage in stages if key in manifests[stage]}
        rows.append(history.PartitionRecord(
            key, "done",
            read=per[stages[0]]["read"] if stages[0] in per else None,
            written=per[stages[-1]]["written"] if stages[-1] in per else None,
            filtered=sum(sum(c["filtered"].values()) for c in per.values()),
            dead_lettered=sum(sum(c["dead_lettered"].values()) for c in per.values()),
            duration_s=round(sum(float(c.get("duration_s") or 0) for c in per.values()), 3),
        ))
    return rows


__all__ = ["Session", "Watch", "engine_started", "finalizing", "watch"]
