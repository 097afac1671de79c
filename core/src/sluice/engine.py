"""The engine: partitions on a thread pool, each a read → transform → write pipeline.

Within a partition three threads overlap reading, transforming and writing. A run-wide semaphore
admits at most ``max_in_flight_batches`` batches between "read" and "written", so memory is
bounded and a slow sink slows every source (backpressure). After the sink (and the dead-letter
sink) report a batch durable, the partition's checkpoint is saved; ``resume`` continues from there.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

from . import observe
from .chain import Chain
from .components import CheckpointStore, Component, Sink, SinkRun, Source
from .config import Job
from .context import RunContext
from .errors import ConfigError, PermanentError, describe_error
from .metrics import Metrics, PartitionFailure, RunSummary, acting
from .partition import Ledger, PartitionRun, Pipeline, Slots, end_marker
from .pool import apply_in_worker, start_pool
from .records import Batch, Partition
from .retry import retry_call

RUN_PARTITION = "_run"  # records a transform emits at the end of the run are written under this key
PROGRESS_EVERY_S = 30.0  # a progress line while partitions run (task logs, non-terminal runs)


Role = Literal["run", "step"]


class Engine:
    """Runs one resolved job once. ``run()`` returns the summary; it never raises for job failures.

    As a whole ``run`` it prepares the sinks, and commits them (or aborts them) at the end, judging
    the error rate. As a ``step`` of a staged run it only writes: the staged run's ``finalize``
    judges and commits once for all steps. ``dead_letter_prefix`` keeps the dead letters of
    several steps of one run apart in the dead-letter store (``extract-<partition>``).
    """

    def __init__(self, job: Job, *, resume: bool = False, metrics: Metrics | None = None,
                 partitions: list[str] | None = None, role: Role = "run", dead_letter_prefix: str = "") -> None:
        """``partitions`` limits the run to those partition keys (a staged run's mapped tasks)."""
        self.job = job
        self.resume = resume
        self.only = set(partitions) if partitions is not None else None
        self.role = role
        self.dead_letter_prefix = dead_letter_prefix
        self.metrics = metrics or Metrics()
        self.ctx = RunContext.for_job(job, resume=resume, metrics=self.metrics)
        self.keys: list[str] = []  # partitions planned, done earlier or not: what commit keeps
        self.flushed = False  # the run-wide flush wrote the RUN_PARTITION
        self.started = False  # some partition began replacing its output
        self.log = self.ctx.logger("engine")
        self.slots = Slots(job.config.runtime.max_in_flight_batches)
        self.pipeline = Pipeline(self)
        self.stop = self.ctx.stop
        self.partitions_total = 0
        self.partitions_done = 0
        self._pool: Any = None

    # -- lifecycle ----------------------------------------------------------------------------
    def run(self) -> RunSummary:
        with _bulk_allocation_gc():
            return self._run()

    def _run(self) -> RunSummary:
        started = time.monotonic()
        watch = observe.engine_started(self)  # live metrics while the run lasts (never raises)
        failures: list[PartitionFailure] = []
        error: str | None = None
        opened: list[Component] = []
        try:
            self._build()
            self._open_all([self.source, *self.chain.steps, self.sink, self.dead_letters], opened)
            if self.role == "run":
                run = SinkRun(resume=self.resume)
                self.retry(lambda: self.sink.prepare(run), "destination")
                self.retry(lambda: self.dead_letters.prepare(run), "dead_letter")
            if self.job.config.transform.processes and self.chain:
                self._pool = start_pool(self.job)
            failures = self._run_partitions()
            if not failures and not self.stop.is_set():
                failures = self._flush_run()
        except KeyboardInterrupt:
            self.stop.set()
            error = "cancelled by the user; continue with --resume"
        except Exception as exc:  # setup failures (cannot connect, bad credentials) end the run cleanly
            self.stop.set()
            error = describe_error(exc)
            self.log.error("run failed", error=error)
        summary = self._summary(started, failures, error)
        self._finish(summary, opened, finished=not failures and error is None)
        summary.duration_s = time.monotonic() - started
        watch.finished(summary)  # export the final numbers and record the run in the history (never raises)
        return summary

    def _open_all(self, components: list[Component], opened: list[Component]) -> None:
        """Open every component at once: each may connect somewhere (a cluster, a bucket), and
        those round trips and client set-ups need not wait for each other."""
        with ThreadPoolExecutor(max_workers=len(components), thread_name_prefix="sluice-open") as pool:
            futures = [(c, pool.submit(c.open, self._ctx_of(c))) for c in components]
        errors = []
        for component, future in futures:
            if future.exception() is None:
                opened.append(component)
            else:
                errors.append(future.exception())
        if errors:
            raise errors[0]  # type: ignore[misc]

    def _ctx_of(self, component: Component) -> RunContext:
        return self.ctx.as_dead_letters() if component is getattr(self, "dead_letters", None) else self.ctx

    def dead_letter_key(self, partition: str) -> str:
        """The partition key of a partition's dead letters in the dead-letter store."""
        return f"{self.dead_letter_prefix}-{partition}" if self.dead_letter_prefix else partition

    def _build(self) -> None:
        job = self.job
        self.source: Source = job.source.build()
        self.chain = Chain.for_job(job)
        self.sink: Sink = job.destination.build()
        self.dead_letters: Sink = job.dead_letter.build()
        self.checkpoints: CheckpointStore = job.checkpoints.build()
        self.checkpoints.open(self.ctx)

    def written_keys(self) -> list[str]:
        """Every partition key this run wrote into the destination (done earlier or now)."""
        return [*self.keys, *([RUN_PARTITION] if self.flushed else [])]

    def _finish(self, summary: RunSummary, opened: list[Component], finished: bool) -> None:
        """Commit on success; otherwise publish no success marker. Dead letters are always kept.

        ``finished`` means every partition completed and is durable (the run may still fail on
        its error rate): dead letters are then committed; after a crash they are aborted with the
        data, as the checkpoints will make the resumed run produce them again. A ``step`` commits
        nothing: it reports what it wrote, and the staged run's finalize commits.
        """
        try:
            sink, dead_letters = getattr(self, "sink", None), getattr(self, "dead_letters", None)
            if sink is not None and sink in opened:
                summary.reports = {"destination": sink.report()}
            if dead_letters is not None and dead_letters in opened:
                summary.reports["dead_letters"] = dead_letters.report()
            if self.role == "run":
                keys = self.written_keys()
                data_run = SinkRun(tuple(keys), (summary.reports.get("destination", {}),), self.resume)
                dead_run = SinkRun(tuple(self.dead_letter_key(k) for k in keys),
                                   (summary.reports.get("dead_letters", {}),), self.resume)
                # a run that failed before any partition started changed nothing: nothing to abort
                if sink is not None and sink in opened:
                    if summary.status == "succeeded":
                        self.retry(lambda: sink.commit(data_run), "destination")
                    elif self.started:
                        sink.abort(data_run)
                if dead_letters is not None and dead_letters in opened:
                    if finished:
                        self.retry(lambda: dead_letters.commit(dead_run), "dead_letter")
                    elif self.started:
                        dead_letters.abort(dead_run)
        except Exception as exc:
            summary.status = "failed"
            summary.error = f"{summary.error + '; ' if summary.error else ''}commit failed: {describe_error(exc)}"
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            for component in [*opened, getattr(self, "checkpoints", None)]:
                if component is None:
                    continue
                try:
                    component.close()
                except Exception as exc:
                    self.log.warning("close failed", component=getattr(component, "type", "?"),
                                     error=describe_error(exc))

    # -- partitions ---------------------------------------------------------------------------
    def _plan(self) -> list[PartitionRun]:
        job_name, run_id = self.job.name, self.job.run_id
        states: dict[str, dict[str, Any]] = {}
        if self.resume:
            states = self.checkpoints.load(job_name, run_id)
            if states and self.chain.state_scope() == "run":
                self.log.warning("a transform keeps state over the whole run: resuming restarts every partition")
                states = {}
                self.checkpoints.clear(job_name, run_id)
        elif self.only is None:
            self.checkpoints.clear(job_name, run_id)
        else:
            for key in self.only:  # a task for some partitions starts those over, and leaves the others
                self.checkpoints.save(job_name, run_id, key, {"seq": -1, "position": None, "done": False})
        keep_positions = self.chain.state_scope() == "batch"
        plan: list[PartitionRun] = []
        partitions = list(self.source.partitions())
        if self.only is not None:
            unknown = self.only - {p.key for p in partitions}
            if unknown:
                raise PermanentError(f"the source has no partition(s) {sorted(unknown)}")
            partitions = [p for p in partitions if p.key in self.only]
        self.partitions_total = len(partitions)
        self.keys = [p.key for p in partitions]
        if states:
            self._check_partitioning(partitions, states)
        for p in partitions:
            state = states.get(p.key)
            if state and state.get("done"):
                self.partitions_done += 1
                continue
            if state and keep_positions:
                seq, position = int(state["seq"]), state.get("position")
                plan.append(PartitionRun(p, Ledger(seq + 1, position, saved=(seq, position))))
            else:
                plan.append(PartitionRun(p, Ledger(0, None)))
        if self.resume:
            self.log.info("resuming", partitions=len(partitions), done=self.partitions_done, todo=len(plan))
        return plan

    def _check_partitioning(self, partitions: list[Partition], states: dict[str, dict[str, Any]]) -> None:
        """Refuse to resume when the checkpoints were saved for another partitioning: resuming the
        new partitions from old positions would read records twice or miss them."""
        current = {p.key: p for p in partitions}
        gone = sorted(k for k in states if k not in current and k != RUN_PARTITION)
        changed = sorted(k for k, state in states.items() if k in current and state.get("spec") is not None
                         and state["spec"] != current[k].fingerprint)
        if gone or changed:
            detail = "; ".join(filter(None, [
                f"partitions no longer there: {', '.join(gone[:5])}" if gone else "",
                f"partitions that now mean other work: {', '.join(changed[:5])}" if changed else "",
                f"partitions now: {', '.join(list(current)[:5])}{' ...' if len(current) > 5 else ''}",
            ]))
            raise ConfigError(f"job {self.job.name!r}: --resume: the source's partitioning changed since the "
                              f"checkpoints were saved ({detail}); resuming would read records twice or miss "
                              "them: run again without --resume to start the interval over, or restore the "
                              "settings that decide the partitioning")

    def _run_partitions(self) -> list[PartitionFailure]:
        plan = self._plan()
        failures: list[PartitionFailure] = []
        workers = min(self.job.config.runtime.max_workers, max(len(plan), 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sluice-partition") as pool:
            futures: dict[Future[None], PartitionRun] = {pool.submit(self._run_partition, pr): pr for pr in plan}
            try:
                pending = set(futures)
                reported = time.monotonic()
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                    for fut in done:
                        fut.result()
                    if time.monotonic() - reported >= PROGRESS_EVERY_S:
                        reported = time.monotonic()
                        m = self.metrics.snapshot()
                        self.log.info("progress", read=m["read"], written=m["written"],
                                      partitions_left=len(pending), partitions=len(futures))
            except KeyboardInterrupt:
                self.stop.set()
                wait(futures)
                raise
        # the partition that failed first is the cause; the others were stopped because of it
        for pr in sorted(plan, key=lambda p: p.failed_at):
            if pr.error is not None or not pr.complete:
                seq, checkpoint = pr.ledger.saved or (None, None)
                failures.append(PartitionFailure(pr.key, pr.error or "not finished (run stopped)", checkpoint, seq,
                                                 pr.bug))
            else:
                self.partitions_done += 1
        return failures

    def _run_partition(self, pr: PartitionRun) -> None:
        if self.stop.is_set():
            return
        key, seq = pr.key, pr.ledger.next_seq
        self.started = True
        try:  # an earlier attempt's output of this partition, from here on, is replaced
            self.retry(lambda: self.sink.start_partition(key, seq), "destination")
            self.retry(lambda: self.dead_letters.start_partition(self.dead_letter_key(key), seq), "dead_letter")
        except Exception as exc:
            pr.fail(f"sink ({key}, starting)", exc, self.label("sink"))
            self.stop.set()
            return
        self.pipeline.run(pr)

    def transform(self, batch: Batch) -> Batch:
        """The chain over one batch (in the process pool when there is one), counted."""
        if not self.chain:
            return batch
        if self._pool is not None:
            batch, counts = self._pool.submit(apply_in_worker, batch).result()
        else:
            batch, counts = self.chain.apply(batch)
        self.count(counts)
        return batch

    def count(self, counts: Any) -> None:
        """Add what the chain filtered and created to the run's counters."""
        for label, n in counts.filtered.items():
            self.metrics.add_filtered(label, n)
        if counts.created:
            self.metrics.add("created", counts.created)

    def retry(self, fn: Any, component: str | None = None) -> Any:
        """``fn()``, retried by the one rule (``errors.is_transient``) and the job's policy, counted
        (for ``component``, else for the one this thread is acting for)."""
        if component is None:
            return retry_call(fn, self.job.config.runtime.retry, metrics=self.metrics)
        with acting(component):
            return retry_call(fn, self.job.config.runtime.retry, metrics=self.metrics)

    def label(self, spec_of: str) -> str:
        """A component as the job file names it: ``destination (type: s3)``."""
        spec = {"source": self.job.source, "sink": self.job.destination, "dead_letters": self.job.dead_letter}[spec_of]
        return f"{spec.where} (type: {spec.type})"

    def _flush_run(self) -> list[PartitionFailure]:
        """Records transforms held for the whole run, written as one more partition."""
        if not self.chain:
            return []
        records, dead, counts = self.chain.flush(None)
        self.count(counts)
        if not records and not dead:
            return []
        pr = PartitionRun(Partition(RUN_PARTITION), Ledger(1, None), complete=True)
        self.flushed = True
        self.retry(lambda: self.sink.start_partition(RUN_PARTITION, 0), "destination")
        self.retry(lambda: self.dead_letters.start_partition(self.dead_letter_key(RUN_PARTITION), 0), "dead_letter")
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        inbox.put((Batch(records, RUN_PARTITION, 0, None, dead), self.slots.take(lambda: False)))
        inbox.put(end_marker())
        self.pipeline.write_loop(pr, inbox)
        return [PartitionFailure(RUN_PARTITION, pr.error, bug=pr.bug)] if pr.error else []

    # -- summary ------------------------------------------------------------------------------
    def _summary(self, started: float, failures: list[PartitionFailure], error: str | None) -> RunSummary:
        m = self.metrics.snapshot()
        summary = RunSummary(
            job=self.job.name, run_id=self.job.run_id, status="succeeded", read=m["read"], written=m["written"],
            created=m["created"], filtered=m["filtered"], dead_lettered=m["dead_lettered"], retries=m["retries"],
            duration_s=time.monotonic() - started, partitions=self.partitions_total,
            partitions_done=self.partitions_done, counters=m["counters"], failures=failures, error=error,
            error_rate_threshold=self.job.config.runtime.error_rate_threshold, keys=self.written_keys(),
        )
        if failures and error is None:
            first = failures[0]
            # a bug would meet --resume again: fix it first; a failure outside (a server) may be over
            # (a step of a staged run is re-run as a whole by its orchestrator: no --resume there)
            hint = "" if first.bug or self.role != "run" else "; run again with --resume to continue"
            summary.error = (f"{len(failures)} partition(s) did not finish; first: {first.partition!r}: {first.error} "
                             f"(checkpoint: {first.checkpoint!r}){hint}")
        dead_letters = getattr(self, "dead_letters", None)
        summary.judge(rate=self.role == "run", dead_letters_in=dead_letters.describe() if dead_letters else "")
        return summary


@contextlib.contextmanager
def _bulk_allocation_gc() -> Iterator[None]:
    """Fewer cyclic-GC passes while the run allocates millions of short-lived, acyclic records.

    Parsing a page of hits creates thousands of dicts; with the default thresholds the collector
    runs every 700 allocations and rescans the batches in flight each time (about 30% of the parse
    time). Records hold no cycles, so collecting less often frees nothing later. Restored after.
    """
    global _gc_users, _gc_saved
    with _gc_lock:
        _gc_users += 1
        if _gc_users == 1:
            _gc_saved = gc.get_threshold()
            gc.collect()  # garbage of an earlier run in this process must not be frozen with the rest
            gc.freeze()  # objects from start-up (modules, models) are never scanned again
            gc.set_threshold(max(_gc_saved[0], 50_000), _gc_saved[1], _gc_saved[2])
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_saved)
                gc.unfreeze()


_gc_lock = threading.Lock()
_gc_users = 0  # engines running in this process (a staged run runs several at once)
_gc_saved: tuple[int, int, int] = (700, 10, 10)
