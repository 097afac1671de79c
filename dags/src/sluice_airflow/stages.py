"""The four stages of a job under Airflow, each a plain Sluice run built from the raw job dict.

- ``plan``: the source's partition keys (XCom: a list of strings).
- ``extract``: source → staging, one task per partition (``Engine(partitions=[key])``).
- ``transform``: staging → transform steps → staging; one task per partition, or one task for
  the whole run when a step keeps run-wide state (aggregate, dedup over the run). Skipped (no
  copy) when the job has no steps: load then reads the extract staging.
- ``load``: staging → destination with ``commit=False``, in one task (a destination's fresh run
  first clears its earlier output, which parallel tasks would do to each other).
- ``finalize``: reconcile the stage counts, persist every stage's dead letters to the job's
  dead-letter store, fail above ``error_rate_threshold``, commit the destination (manifest,
  ``_SUCCESS``) and clean staging.

Nothing here imports Airflow: the functions take the run's interval and return small manifests.
Every run uses Sluice's deterministic run id for the interval, so a re-run rewrites the same keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from sluice import JobFailed, secrets
from sluice.components import Sink, Source
from sluice.config import Job, load_job
from sluice.context import RunContext
from sluice.engine import Engine
from sluice.records import Batch
from sluice.templating import Interval

from .connections import expand_job
from .reconcile import Reconciliation, add_counts, reconcile, stage_counts
from .staged_source import StagedConfig, StagedSource
from .staging import ALL, Staging

TransformMode = Literal["none", "mapped", "single"]


def state_scope(job: Job) -> str:
    """The widest state the job's transform steps keep: batch, partition or run."""
    from sluice.chain import Chain

    return Chain([s.build() for s in job.steps], [s.type for s in job.steps]).state_scope()


def transform_mode(job: Job) -> TransformMode:
    """How the transform stage runs: not at all (no steps), one task per partition, or one task
    when a step keeps state over the whole run (it must see every partition)."""
    if not job.steps:
        return "none"
    return "single" if state_scope(job) == "run" else "mapped"


def where(spec: Any) -> str:
    """Where a component block points (uri, path or index), for messages; never credentials."""
    raw = spec.raw
    return str(raw.get("uri") or raw.get("path") or raw.get("index") or raw.get("type"))


class RunPlan:
    """One run of a job (raw dict and interval): its resolved job, staging and stage jobs."""

    def __init__(self, raw: dict[str, Any], interval: Interval, *, lookup: bool = True) -> None:
        """``lookup=False`` expands ``connection:`` without reading Airflow's connections (tests, parse time)."""
        self.raw = expand_job(raw, lookup=lookup)
        self.interval = interval
        self.name = str(raw["job_name"])
        self.run_id = interval.default_run_id(self.name)
        self.job = self._load(self.raw)
        if isinstance(self.raw.get("staging"), str):  # a top-level value core does not render
            self.raw["staging"] = self.job.renderer.render(self.raw["staging"], "staging")  # type: ignore[union-attr]
        self.staging = Staging.for_run(self.raw, interval)
        self.mode = transform_mode(self.job)

    def _load(self, raw: dict[str, Any]) -> Job:
        return load_job(raw, interval=self.interval, run_id=self.run_id)

    def stage_job(self, *, source: dict[str, Any], destination: dict[str, Any], dead_letter: dict[str, Any],
                  checkpoints: dict[str, Any], steps: bool = False, staged: bool = True) -> Job:
        """A Sluice job for one stage: the user's job with other ends, and no error-rate check (the
        rate is judged once, over every stage, in finalize). ``staged`` sources read staging back
        as the original source partitions."""
        raw = dict(self.raw)
        runtime = dict(raw.get("runtime") or {})
        runtime["error_rate_threshold"] = 1.0
        transform = dict(raw.get("transform") or {})
        if not steps:
            transform = {"steps": [], "processes": 0}
        raw.update(source=source, destination=destination, dead_letter=dead_letter, checkpoints=checkpoints,
                   runtime=runtime, transform=transform)
        job = self._load(raw)
        if staged:
            job.source = replace(job.source, klass=StagedSource, config=StagedConfig(job.source.klass,
                                                                                     job.source.config))
        return job

    # -- stages -------------------------------------------------------------------------------
    def partitions(self) -> list[str]:
        """The source's partition keys for this interval."""
        source: Source = self.job.source.build()
        source.open(context(self.job))
        try:
            keys = [p.key for p in source.partitions()]
        finally:
            source.close()
        if len(set(keys)) != len(keys):
            raise JobFailed(f"job {self.name!r}: the source returned duplicate partition keys")
        return keys

    def extract(self, partition: str) -> dict[str, Any]:
        """Read one source partition into staging."""
        s = self.staging
        job = self.stage_job(source=self.raw["source"], staged=False, destination=s.sink(s.data("extract", partition)),
                             dead_letter=s.sink(s.dead("extract", partition)),
                             checkpoints=s.checkpoints("extract", partition))
        return self._run("extract", job, partition, only=[partition])

    def transform(self, partition: str | None) -> dict[str, Any]:
        """Transform one partition's staged records (``None``: every partition, in one run)."""
        s = self.staging
        folder = partition if partition is not None else ALL
        job = self.stage_job(source=s.source(s.data("extract", partition)),
                             destination=s.sink(s.data("transform", folder)),
                             dead_letter=s.sink(s.dead("transform", folder)),
                             checkpoints=s.checkpoints("transform", folder), steps=True)
        return self._run("transform", job, folder)

    def load(self) -> dict[str, Any]:
        """Write the staged records to the destination; the commit waits for finalize."""
        s = self.staging
        staged = s.data("transform" if self.mode != "none" else "extract")
        job = self.stage_job(source=s.source(staged), destination=self.raw["destination"],
                             dead_letter=s.sink(s.dead("load", ALL)), checkpoints=s.checkpoints("load"))
        return self._run("load", job, ALL, commit=False)

    def _run(self, stage: str, job: Job, label: str, only: list[str] | None = None,
             commit: bool = False) -> dict[str, Any]:
        summary = Engine(job, partitions=only, commit=commit).run()
        if summary.status != "succeeded":
            raise JobFailed(secrets.mask(f"job {self.name!r}, {stage} ({label}), run {self.run_id}: {summary.error}"))
        return {"stage": stage, "partition": label, "counts": stage_counts(summary)}

    # -- finalize -----------------------------------------------------------------------------
    def finalize(self, extract: Sequence[dict[str, Any]], transform: Sequence[dict[str, Any]],
                 load: dict[str, Any], clean: bool = True) -> dict[str, Any]:
        """Reconcile, persist dead letters, judge the error rate, commit, clean staging."""
        counts = reconcile(add_counts(m["counts"] for m in extract),
                           add_counts(m["counts"] for m in transform) if self.mode != "none" else None,
                           load["counts"])
        persisted = self.persist_dead_letters(counts)
        threshold = self.job.config.runtime.error_rate_threshold
        dead_where = where(self.job.dead_letter)
        if counts.problems:
            raise JobFailed(f"job {self.name!r}, run {self.run_id}: counts do not reconcile: "
                            + "; ".join(counts.problems))
        if counts.error_rate > threshold:
            by_stage = ", ".join(f"{k} {v}" for k, v in counts.dead_by_stage.items() if v)
            raise JobFailed(f"job {self.name!r}, run {self.run_id}: error rate {counts.error_rate:.2%} "
                            f"({counts.dead_lettered} dead letters / {counts.read} records read; {by_stage}) exceeds "
                            f"error_rate_threshold {threshold:.2%}; dead letters are in {dead_where}; the destination "
                            "was not committed")
        self.commit_destination()
        if clean:
            self.staging.clean(self.job.renderer.render)  # type: ignore[union-attr]
        return {"job": self.name, "run_id": self.run_id, "status": "succeeded",
                "interval": [self.interval.start.isoformat(), self.interval.end.isoformat()],
                **counts.to_dict(), "error_rate_threshold": threshold, "dead_letters_stored": persisted,
                "dead_letters": dead_where, "destination": where(self.job.destination)}

    def persist_dead_letters(self, counts: Reconciliation) -> int:
        """Copy every stage's staged dead letters into the job's dead-letter store and commit it.

        The store is opened as a fresh run, so it first removes this run's earlier dead letters: a
        re-run of the interval leaves exactly this run's. Returns how many were stored.
        """
        sink: Sink = self.job.dead_letter.build()
        sink.role = "dead_letters"
        ctx = context(self.job)
        sink.open(ctx)
        stored = 0
        try:
            for stage in ("extract", "transform", "load"):
                stored += self._copy(self.staging.source(self.staging.dead(stage)), sink, stage, ctx)
            if stored != counts.dead_lettered:
                raise JobFailed(f"job {self.name!r}, run {self.run_id}: staging holds {stored} dead letters but the "
                                f"stages reported {counts.dead_lettered}")
            sink.commit()
        except BaseException:
            sink.abort()
            raise
        finally:
            sink.close()
        return stored

    def _copy(self, block: dict[str, Any], sink: Sink, stage: str, ctx: RunContext) -> int:
        registry = self.job.registry
        assert registry is not None and self.job.renderer is not None
        klass, config = registry.validate("source", self.job.renderer.render(block, "staging"), "staging")
        source = StagedSource(StagedConfig(klass, config))
        source.open(ctx)
        n = 0
        try:
            for partition in source.partitions():
                key = f"{stage}-{partition.key}"
                for seq, batch in enumerate(source.read(partition)):
                    if batch.dead_letters:
                        raise JobFailed(f"staged dead letters of {stage} are damaged: "
                                        f"{batch.dead_letters[0].reason}")
                    result = sink.write(Batch(batch.records, key, seq))
                    if result.written != len(batch.records):
                        raise JobFailed(f"the dead-letter store {sink.describe()} stored {result.written} of "
                                        f"{len(batch.records)} dead letters")
                    n += result.written
                sink.finish_partition(key)
        finally:
            source.close()
        return n

    def commit_destination(self) -> None:
        """Commit the destination the load stage wrote (manifest, success marker), without clearing it."""
        sink: Sink = self.job.destination.build()
        sink.open(context(self.job, resume=True))
        try:
            sink.commit()
        finally:
            sink.close()


def context(job: Job, resume: bool = False) -> RunContext:
    """A run context for opening one of ``job``'s components outside the engine."""
    return RunContext(job_name=job.name, run_id=job.run_id, interval=job.interval, runtime=job.config.runtime,
                      renderer=job.renderer, resume=resume)  # type: ignore[arg-type]
