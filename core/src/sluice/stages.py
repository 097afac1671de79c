"""Staged runs: one job and interval split into steps that any orchestrator or runner calls.

    plan       the source's partitions; readies both sinks (``prepare``)
    extract    per partition: source (→ the steps, with ``transform: with_extract``) → staging
    transform  per partition, or once for every partition when a step keeps run-wide state:
               staging → the steps → staging
    load       per partition: staging → destination, uncommitted
    run        fused mode, per partition: source → steps → destination, no staged copy
    finalize   reconcile every step, judge the error rate, commit dead letters and destination

Each step is a plain function of (job, interval, partition) returning a small JSON manifest, which
it also keeps in staging: a later step reads what it needs from staging rather than from the
orchestrator, so any step can be re-run alone and leaves the same output. Steps write their
dead letters straight into the job's dead-letter store (under ``<stage>-<partition>`` keys) and
their records into staging; only ``finalize`` commits, once, from the manifests.

Staging layout under ``{staging}/{job}/{interval}/``: ``plan.json``, ``manifests/{stage}/{p}.json``,
``records/{stage}/{p}/{seq}.jsonl[.zst]``, ``checkpoints/{stage}/{p}/``. Finalized runs are noted
under ``{staging}/{job}/_runs/`` and their folders removed after ``staging.retention``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from . import observe, secrets
from .chain import Chain
from .components import Sink, SinkRun
from .config import ComponentSpec, Job, StagingConfig, load_job
from .connections import expand_connection
from .context import RunContext
from .engine import RUN_PARTITION, Engine
from .errors import ConfigError, JobFailed, describe_error
from .lease import Lease
from .metrics import RunSummary
from .reconcile import add_counts, reconcile, run_summary, step_counts
from .records import safe_key
from .registry import Registry
from .retry import retry_call
from .staged_io import StagedCheckpoints, StagedFolder, StagedInput, StagedSink, StagedSource
from .staging import StagingStore, open_store
from .templating import Interval

Mode = Literal["staged", "fused"]
Placement = Literal["none", "with_extract", "separate", "single"]
STAGING_ENV = "SLUICE_STAGING"
DEFAULT_STAGING = ".sluice/staging"
ALL = "_all"  # the task of a stage that runs once over every partition
T = TypeVar("T")


@dataclass(frozen=True)
class Layout:
    """How a job runs staged: the mode, where its transform steps run, and so which stages exist."""

    mode: Mode
    transform: Placement

    @property
    def stages(self) -> list[str]:
        """The stages whose manifests finalize reconciles, in order."""
        if self.mode == "fused":
            return ["run"]
        return ["extract", "transform", "load"] if self.transform in ("separate", "single") else ["extract", "load"]

    @property
    def loads_from(self) -> str:
        return "transform" if self.transform in ("separate", "single") else "extract"


def staging_config(job: Job) -> StagingConfig:
    """The job's ``staging:`` block; else ``$SLUICE_STAGING``; else ``.sluice/staging``."""
    return job.config.staging or StagingConfig(uri=os.environ.get(STAGING_ENV) or DEFAULT_STAGING)


def layout(job: Job) -> Layout:
    """The job's layout; a ConfigError when its staging mode cannot run its steps."""
    config = staging_config(job)
    if not job.steps:
        return Layout(config.mode, "none")
    if Chain.for_job(job).state_scope() == "run":
        if config.mode == "fused":
            raise ConfigError(f"job {job.name!r}: staging.mode fused runs each partition on its own, but a transform "
                              "step keeps state over the whole run (aggregate or dedup with scope: run); use "
                              "mode: staged")
        return Layout("staged", "single")
    return Layout(config.mode, "with_extract" if config.mode == "fused" else config.transform)


def _leased(step: Callable[..., T]) -> Callable[..., T]:
    """Run a step holding the run's lease (when the run has an owner), renewed while it works."""

    @functools.wraps(step)
    def run(self: StagedRun, *args: Any) -> T:
        if self.lease is None:
            return step(self, *args)
        with self.lease.held():
            result = step(self, *args)
        if step.__name__ == "finalize":
            self.lease.release()  # after the renewing stopped: the next run of the interval need not wait
        return result

    return run


class StagedRun:
    """One job and interval, run step by step over a staging store. Open it per step; close it.

    ``owner`` names the orchestrator's run (Airflow's run id): the steps of one owner share the
    interval's lease, and a step of another owner fails while the lease is held. Without an owner
    no lease is taken (the caller keeps runs of one interval apart).
    """

    def __init__(self, job: Job, owner: str | None = None) -> None:
        self.job = job
        self.layout = layout(job)
        self.config = staging_config(job)
        self.ctx = RunContext.for_job(job)
        self.log = self.ctx.logger("staged").bind(interval=job.interval.label, owner=owner)
        self.store: StagingStore = self._open_store()
        self.runs = safe_key(job.name)  # the job's folder in staging
        self.root = f"{self.runs}/{job.interval.label}"
        what = f"job {job.name!r}, interval {job.interval.start.isoformat()} to {job.interval.end.isoformat()}"
        self.lease = None if owner is None else Lease(self.store, self._key("lease.json"), owner,
                                                      self.config.lease_ttl, what)

    @classmethod
    def open(cls, job: str | Path | dict[str, Any], interval: Interval, *, owner: str | None = None,
             run_id: str | None = None, registry: Registry | None = None) -> StagedRun:
        """Load ``job`` (a file or a dict) for ``interval`` and open its staging."""
        return cls(load_job(job, interval=interval, run_id=run_id, registry=registry), owner)

    def _open_store(self) -> StagingStore:
        job, renderer, registry = self.job, self.job.renderer, self.job.registry
        assert renderer is not None and registry is not None
        uri = str(renderer.render(self.config.uri, "staging.uri")).rstrip("/")
        options = dict(self.config.options)
        if "connection" in options:  # connection: works here as in any component block of that scheme
            scheme = uri.split("://", 1)[0] if "://" in uri else "jsonl"
            options = expand_connection({"type": scheme, **options}, "sink", "staging.options", registry)
            options.pop("type")
        options = renderer.render(options, "staging.options")
        return open_store(uri, options, job, self.ctx)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> StagedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- where things are ---------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _manifest_key(self, stage: str, task: str) -> str:
        return self._key("manifests", stage, f"{safe_key(task)}.json")

    def _records(self, stage: str) -> StagedFolder:
        return StagedFolder(self.store, self._key("records", stage))

    def _checkpoints(self, stage: str, task: str) -> ComponentSpec:
        folder = StagedFolder(self.store, self._key("checkpoints", stage, safe_key(task)))
        return ComponentSpec("checkpoint_store", StagedCheckpoints, folder, f"staging ({stage})", {"type": "staging"})

    def _staged_sink(self, stage: str) -> ComponentSpec:
        return ComponentSpec("sink", StagedSink, self._records(stage), f"staging ({stage})", {"type": "staging"})

    def _staged_source(self, stage: str, partitions: list[str]) -> ComponentSpec:
        config = StagedInput(self._records(stage), tuple(partitions))
        return ComponentSpec("source", StagedSource, config, f"staging ({stage})", {"type": "staging"})

    # -- steps --------------------------------------------------------------------------------
    @_leased
    def plan(self) -> dict[str, Any]:
        """List the source's partitions and ready both sinks; the plan is kept in staging."""
        source = self.job.source.build()
        try:
            with self._failing(f"plan: listing the partitions of {where(self.job.source)}"):
                source.open(self.ctx)
                keys = [p.key for p in self._call(source.partitions)]
        finally:
            source.close()
        if len(set(keys)) != len(keys):
            raise JobFailed(f"job {self.job.name!r}: the source returned duplicate partition keys")
        self._each_sink("plan: preparing the", lambda sink: sink.prepare(SinkRun()))
        plan = {
            "job": self.job.name, "run_id": self.job.run_id,
            "interval": [self.job.interval.start.isoformat(), self.job.interval.end.isoformat()],
            "mode": self.layout.mode, "transform": self.layout.transform, "stages": self.layout.stages,
            "partitions": keys,
            "load_partitions": [*keys, RUN_PARTITION] if self.layout.transform == "single" else keys,
            "staging": self.store.describe(),
        }
        self.store.put_json(self._key("plan.json"), plan)
        self.log.info("planned", partitions=len(keys), mode=self.layout.mode, transform=self.layout.transform)
        return plan

    @_leased
    def extract(self, partition: str) -> dict[str, Any]:
        """Read one source partition into staging (through the steps, with ``with_extract``)."""
        self._expect("staged")
        steps = self.job.steps if self.layout.transform == "with_extract" else []
        job = replace(self.job, steps=steps, destination=self._staged_sink("extract"),
                      checkpoints=self._checkpoints("extract", partition))
        return self._step("extract", partition, job, [partition], dead_letter_prefix="extract")

    @_leased
    def transform(self, partition: str | None = None) -> dict[str, Any]:
        """Run the steps over one staged partition, or over every one (``None``) when a step keeps
        state over the whole run."""
        self._expect("staged")
        if self.layout.transform not in ("separate", "single"):
            raise JobFailed(f"job {self.job.name!r} has no transform stage (transform: {self.layout.transform})")
        if (partition is None) != (self.layout.transform == "single"):
            raise JobFailed(f"job {self.job.name!r}: the transform stage runs "
                            + ("once over every partition" if self.layout.transform == "single" else "per partition"))
        plan = self._plan()
        keys = plan["partitions"] if partition is None else [partition]
        self._need_upstream("transform", "extract", keys)
        task = partition if partition is not None else ALL
        job = replace(self.job, source=self._staged_source("extract", keys), destination=self._staged_sink("transform"),
                      checkpoints=self._checkpoints("transform", task))
        return self._step("transform", task, job, None if partition is None else keys,
                          dead_letter_prefix="transform")

    @_leased
    def load(self, partition: str) -> dict[str, Any]:
        """Write one staged partition to the destination, uncommitted.

        Refuses before writing anything when the steps before already dead-lettered more than
        ``error_rate_threshold`` of the records read (the run would fail in finalize anyway).
        """
        self._expect("staged")
        plan = self._plan()
        upstream = self.layout.loads_from
        self._need_upstream("load", upstream, [partition])
        self._gate(plan)
        job = replace(self.job, source=self._staged_source(upstream, [partition]), steps=[],
                      checkpoints=self._checkpoints("load", partition))
        return self._step("load", partition, job, [partition], dead_letter_prefix="load")

    @_leased
    def run(self, partition: str) -> dict[str, Any]:
        """Fused mode: source → steps → destination for one partition, uncommitted."""
        self._expect("fused")
        job = replace(self.job, checkpoints=self._checkpoints("run", partition))
        return self._step("run", partition, job, [partition], dead_letter_prefix="")

    @_leased
    def finalize(self) -> dict[str, Any]:
        """Reconcile every step, judge the error rate, commit the dead letters and the destination."""
        plan = self._plan()
        manifests = {stage: self._manifests(stage, plan) for stage in plan["stages"]}
        stages = [(stage, add_counts(m["counts"] for m in manifests[stage].values())) for stage in plan["stages"]]
        threshold = self.job.config.runtime.error_rate_threshold
        summary = run_summary(self.job.name, self.job.run_id, stages, threshold)
        summary.partitions = summary.partitions_done = len(plan["partitions"])
        problems = reconcile(stages)
        if problems:
            summary.error = "counts do not reconcile: " + "; ".join(problems)
        summary.judge(dead_letters_in=where(self.job.dead_letter))
        every = [m for per_stage in manifests.values() for m in per_stage.values()]
        dead_run = SinkRun(tuple(sorted({k for m in every for k in m["dead_letter_partitions"]})),
                           tuple(m["reports"].get("dead_letters", {}) for m in every))
        final_stage = plan["stages"][-1]
        data_run = SinkRun(tuple(sorted({k for m in manifests[final_stage].values() for k in m["partitions"]})),
                           tuple(m["reports"].get("destination", {}) for m in manifests[final_stage].values()))
        with observe.finalizing(self, summary, plan, manifests):  # the run's history record and final metrics
            # dead letters are kept and made findable whatever the verdict
            self._sink("finalize: committing the", self.job.dead_letter, self.ctx.as_dead_letters(),
                       lambda s: s.commit(dead_run))
            if summary.status != "succeeded":
                self._sink("finalize: aborting the", self.job.destination, self.ctx, lambda s: s.abort(data_run))
                raise JobFailed(secrets.mask(f"job {self.job.name!r}, run {self.job.run_id}: {summary.error}; the "
                                             "destination was not committed"))
            self._sink("finalize: committing the", self.job.destination, self.ctx, lambda s: s.commit(data_run))
        report = {**summary.to_dict(), "interval": plan["interval"], "stages": {n: c for n, c in stages},
                  "destination": where(self.job.destination), "dead_letters": where(self.job.dead_letter)}
        for key in ("counters", "failures"):
            report.pop(key, None)
        self._note_finished(report)
        self.log.info("finalized", read=summary.read, written=summary.written,
                      dead_lettered=summary.dead_lettered_total, filtered=summary.filtered_total)
        return report

    # -- helpers ------------------------------------------------------------------------------
    def _step(self, stage: str, task: str, job: Job, partitions: list[str] | None,
              dead_letter_prefix: str) -> dict[str, Any]:
        key = self._manifest_key(stage, task)
        self.store.delete([key])  # until this attempt succeeds, later steps must not trust an earlier one
        engine = Engine(job, partitions=partitions, role="step", dead_letter_prefix=dead_letter_prefix)
        summary = engine.run()
        if summary.status != "succeeded":
            raise JobFailed(secrets.mask(f"job {self.job.name!r}, {stage} ({task}), run {self.job.run_id}: "
                                         f"{summary.error}"))
        manifest = {"stage": stage, "partition": task, "counts": step_counts(summary), "partitions": summary.keys,
                    "dead_letter_partitions": [engine.dead_letter_key(k) for k in summary.keys],
                    "reports": summary.reports}
        self.store.put_json(key, manifest)
        self.log.info("step done", stage=stage, partition=task, read=summary.read, written=summary.written,
                      dead_lettered=summary.dead_lettered_total, filtered=summary.filtered_total)
        return manifest

    def _expect(self, mode: Mode) -> None:
        if self.layout.mode != mode:
            raise JobFailed(f"job {self.job.name!r} runs in staging mode {self.layout.mode!r}, not {mode!r}")

    def _plan(self) -> dict[str, Any]:
        plan = self.store.get_json(self._key("plan.json"))
        if plan is None:
            raise JobFailed(self._missing("no plan"))
        return plan  # type: ignore[no-any-return]

    def _missing(self, what: str) -> str:
        note = self.store.get_json(f"{self.runs}/_runs/{self.job.interval.label}.json")
        if note and note.get("purged"):
            return (f"job {self.job.name!r}, run {self.job.run_id}: {what} in staging: the run finished on "
                    f"{note['finished_at']} and its staging was removed after staging.retention; run the "
                    "whole interval again")
        return (f"job {self.job.name!r}, run {self.job.run_id}: {what} in staging "
                f"({self.store.describe()}/{self.root}); run the steps before it first")

    def _manifests(self, stage: str, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every task's manifest of ``stage`` (the stage must have run for every partition)."""
        tasks = [ALL] if stage == "transform" and plan["transform"] == "single" else \
            plan["load_partitions"] if stage == "load" else plan["partitions"]
        found = {t: self.store.get_json(self._manifest_key(stage, t)) for t in tasks}
        missing = [t for t, m in found.items() if m is None]
        if missing:
            raise JobFailed(self._missing(f"{stage} has not finished for {len(missing)} partition(s) "
                                          f"({', '.join(repr(t) for t in missing[:5])})"))
        return found  # type: ignore[return-value]

    def _need_upstream(self, stage: str, upstream: str, keys: list[str]) -> None:
        """A step reads what ``upstream`` staged: refuse before writing when it has not (or no longer)."""
        plan = self._plan()
        if upstream == "transform" and plan["transform"] == "single":
            self._manifests("transform", plan)
            return
        missing = [k for k in keys if self.store.get_json(self._manifest_key(upstream, k)) is None
                   and k != RUN_PARTITION]
        if missing:
            raise JobFailed(self._missing(f"{stage} needs {upstream} of {', '.join(repr(k) for k in missing)}, "
                                          "which is not"))

    def _gate(self, plan: dict[str, Any]) -> None:
        """Fail the load before it writes when the steps before it already exceed the error rate."""
        stages = [(s, add_counts(m["counts"] for m in self._manifests(s, plan).values()))
                  for s in plan["stages"] if s != "load"]
        so_far = run_summary(self.job.name, self.job.run_id, stages, self.job.config.runtime.error_rate_threshold)
        if so_far.over_threshold:
            raise JobFailed(f"job {self.job.name!r}, run {self.job.run_id}: error rate {so_far.error_rate:.2%} "
                            f"({so_far.dead_lettered_total} dead letters / {so_far.read} records read before load) "
                            f"exceeds error_rate_threshold {so_far.error_rate_threshold:.2%}; nothing was loaded; "
                            f"dead letters are in {where(self.job.dead_letter)}")

    def _each_sink(self, what: str, fn: Callable[[Sink], None]) -> None:
        self._sink(what, self.job.destination, self.ctx, fn)
        self._sink(what, self.job.dead_letter, self.ctx.as_dead_letters(), fn)

    def _sink(self, what: str, spec: ComponentSpec, ctx: RunContext, fn: Callable[[Sink], None]) -> None:
        """Open a fresh instance of a sink, call ``fn`` on it (retrying what is transient), close it.
        Errors name the job, the step (``what``) and where the sink writes."""
        sink: Sink = spec.build()
        try:
            with self._failing(f"{what} {spec.where} ({where(spec)})"):
                sink.open(ctx)
                self._call(lambda: fn(sink))
        finally:
            sink.close()

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """Errors inside become one JobFailed line naming the job, the run and what was being done."""
        try:
            yield
        except (ConfigError, JobFailed):
            raise
        except Exception as exc:
            raise JobFailed(secrets.mask(f"job {self.job.name!r}, run {self.job.run_id}: {what} failed: "
                                         f"{describe_error(exc)}")) from None

    def _call(self, fn: Callable[[], T]) -> T:
        return retry_call(fn, self.job.config.runtime.retry, metrics=self.ctx.metrics)

    def _note_finished(self, report: dict[str, Any]) -> None:
        """Note the run as finished, and remove the staging of runs finished before the retention."""
        now = datetime.now(UTC)
        retention: timedelta = self.config.retention
        note = {"finished_at": now.isoformat(), "run_id": self.job.run_id, "purged": False,
                "read": report["read"], "written": report["written"]}
        self.store.put_json(f"{self.runs}/_runs/{self.job.interval.label}.json", note)
        for key in self.store.list(f"{self.runs}/_runs"):
            label = key.rsplit("/", 1)[-1].removesuffix(".json")
            other = self.store.get_json(key)
            if not other or other.get("purged"):
                continue
            if now - datetime.fromisoformat(other["finished_at"]) >= retention:
                self.store.delete_prefix(f"{self.runs}/{label}")
                self.store.put_json(key, {**other, "purged": True})
                self.log.info("staging removed after its retention", interval=label)


def where(spec: ComponentSpec) -> str:
    """Where a component block points (uri, path, index or type), for messages; never credentials."""
    raw = spec.raw
    return str(raw.get("uri") or raw.get("path") or raw.get("index") or raw.get("type"))


# -- the steps as plain functions (what orchestrator adapters call) -------------------------------
JobRef = str | Path | dict[str, Any]


def _with(job: JobRef, interval: Interval, owner: str | None, fn: Callable[[StagedRun], T]) -> T:
    with StagedRun.open(job, interval, owner=owner) as run:
        return fn(run)


def plan(job: JobRef, interval: Interval, owner: str | None = None) -> dict[str, Any]:
    """The plan of ``job`` for ``interval`` (see ``StagedRun.plan``)."""
    return _with(job, interval, owner, StagedRun.plan)


def extract(job: JobRef, interval: Interval, partition: str, owner: str | None = None) -> dict[str, Any]:
    """Extract one partition (see ``StagedRun.extract``)."""
    return _with(job, interval, owner, lambda r: r.extract(partition))


def transform(job: JobRef, interval: Interval, partition: str | None = None,
              owner: str | None = None) -> dict[str, Any]:
    """Transform one staged partition, or all (see ``StagedRun.transform``)."""
    return _with(job, interval, owner, lambda r: r.transform(partition))


def load(job: JobRef, interval: Interval, partition: str, owner: str | None = None) -> dict[str, Any]:
    """Load one staged partition (see ``StagedRun.load``)."""
    return _with(job, interval, owner, lambda r: r.load(partition))


def run_partition(job: JobRef, interval: Interval, partition: str, owner: str | None = None) -> dict[str, Any]:
    """Fused mode: one partition from source to destination (see ``StagedRun.run``)."""
    return _with(job, interval, owner, lambda r: r.run(partition))


def finalize(job: JobRef, interval: Interval, owner: str | None = None) -> dict[str, Any]:
    """Reconcile, judge and commit the run (see ``StagedRun.finalize``)."""
    return _with(job, interval, owner, StagedRun.finalize)


def run_staged(job: Job, *, workers: int | None = None, owner: str | None = None) -> RunSummary:
    """Every step of a staged run in this process, mapped steps on a thread pool: the path an
    orchestrator takes, without one (``sluice run --staged``). Returns the run's summary.
    ``owner`` defaults to a new id, so a second ``--staged`` run of the interval fails at once."""
    import time
    import uuid

    started = time.monotonic()
    staged = StagedRun(job, owner or f"sluice-run-{uuid.uuid4().hex[:12]}")
    try:
        pool = ThreadPoolExecutor(max_workers=workers or job.config.runtime.max_workers,
                                  thread_name_prefix="sluice-step")
        with pool:
            plan = staged.plan()
            keys = plan["partitions"]
            if staged.layout.mode == "fused":
                list(pool.map(staged.run, keys))
            else:
                list(pool.map(staged.extract, keys))
                if staged.layout.transform == "separate":
                    list(pool.map(staged.transform, keys))
                elif staged.layout.transform == "single":
                    staged.transform(None)
                list(pool.map(staged.load, plan["load_partitions"]))
        report = staged.finalize()
    finally:
        staged.close()
    summary = summary_of(report)
    summary.duration_s = time.monotonic() - started  # wall time: the steps' own durations overlap
    return summary


def summary_of(report: dict[str, Any]) -> RunSummary:
    """A finalize report back as a ``RunSummary`` (for printing like a plain run's)."""
    return RunSummary(job=report["job"], run_id=report["run_id"], status=report["status"], read=report["read"],
                      written=report["written"], created=report["created"], filtered=report["filtered"],
                      dead_lettered=report["dead_lettered"], retries=report["retries"],
                      duration_s=report["duration_s"], partitions=report["partitions"],
                      partitions_done=report["partitions_done"], error=report["error"],
                      error_rate_threshold=report["error_rate_threshold"])


__all__ = ["Layout", "StagedRun", "extract", "finalize", "layout", "load", "plan", "run_partition", "run_staged",
           "staging_config", "transform"]
