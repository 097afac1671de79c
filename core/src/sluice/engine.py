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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .chain import Chain, step_label
from .components import CheckpointStore, Component, Sink, SinkRun, Source
from .config import Job
from .context import RunContext
from .errors import PermanentError, blame, bug_report, describe_error, is_bug
from .metrics import Metrics, PartitionFailure, RunSummary
from .pool import apply_in_worker, start_pool
from .records import Batch, DeadLetter, Partition
from .retry import retry_call

_END = object()
RUN_PARTITION = "_run"  # records a transform emits at the end of the run are written under this key
PROGRESS_EVERY_S = 30.0  # a progress line while partitions run (task logs, non-terminal runs)


@dataclass
class _PartitionRun:
    """One partition's progress while it runs."""

    partition: Partition
    seq: int  # next sequence number to hand out
    position: Any  # source checkpoint to read after
    complete: bool = False  # the source was read to the end
    error: str | None = None
    bug: bool = False  # the failure is a programming error: resuming would only meet it again
    failed_stage: str | None = None
    failed_at: float = float("inf")
    failed: threading.Event = field(default_factory=threading.Event)
    discard: threading.Event = field(default_factory=threading.Event)  # drop queued batches (downstream failed)
    written_seq: int | None = None
    written_position: Any = None
    saved_seq: int | None = None
    saved_position: Any = None

    def fail(self, stage: str, exc: BaseException, component: str) -> None:
        """Record the first failure; ``component`` names what raised (``destination (type: s3)``)."""
        if not self.failed.is_set():
            self.bug = is_bug(exc)
            component = getattr(exc, "sluice_component", component)  # a transform step names itself
            what = bug_report(exc, component) if self.bug else describe_error(exc)
            self.error, self.failed_stage = f"{stage}: {what}", stage
            self.failed_at = time.monotonic()
            self.failed.set()
        if stage != "source":
            # a source failure lets batches already read go through and be checkpointed; a transform or
            # sink failure drops them (they were never checkpointed, so resume reads them again)
            self.discard.set()


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
        self.slots = threading.BoundedSemaphore(job.config.runtime.max_in_flight_batches)
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
        failures: list[PartitionFailure] = []
        error: str | None = None
        opened: list[Component] = []
        try:
            self._build()
            self._open_all([self.source, *self.chain.steps, self.sink, self.dead_letters], opened)
            if self.role == "run":
                run = SinkRun(resume=self.resume)
                self._retry(lambda: self.sink.prepare(run))
                self._retry(lambda: self.dead_letters.prepare(run))
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
                        self._retry(lambda: sink.commit(data_run))
                    elif self.started:
                        sink.abort(data_run)
                if dead_letters is not None and dead_letters in opened:
                    if finished:
                        self._retry(lambda: dead_letters.commit(dead_run))
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
    def _plan(self) -> list[_PartitionRun]:
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
        plan: list[_PartitionRun] = []
        partitions = list(self.source.partitions())
        if self.only is not None:
            unknown = self.only - {p.key for p in partitions}
            if unknown:
                raise PermanentError(f"the source has no partition(s) {sorted(unknown)}")
            partitions = [p for p in partitions if p.key in self.only]
        self.partitions_total = len(partitions)
        self.keys = [p.key for p in partitions]
        for p in partitions:
            state = states.get(p.key)
            if state and state.get("done"):
                self.partitions_done += 1
                continue
            if state and keep_positions:
                pr = _PartitionRun(p, int(state["seq"]) + 1, state.get("position"))
                pr.saved_seq, pr.saved_position = int(state["seq"]), state.get("position")
                plan.append(pr)
            else:
                plan.append(_PartitionRun(p, 0, None))
        if self.resume:
            self.log.info("resuming", partitions=len(partitions), done=self.partitions_done, todo=len(plan))
        return plan

    def _run_partitions(self) -> list[PartitionFailure]:
        plan = self._plan()
        failures: list[PartitionFailure] = []
        workers = min(self.job.config.runtime.max_workers, max(len(plan), 1))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sluice-partition") as pool:
            futures: dict[Future[None], _PartitionRun] = {pool.submit(self._run_partition, pr): pr for pr in plan}
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
                failures.append(PartitionFailure(pr.partition.key, pr.error or "not finished (run stopped)",
                                                 pr.saved_position, pr.saved_seq, pr.bug))
            else:
                self.partitions_done += 1
        return failures

    def _run_partition(self, pr: _PartitionRun) -> None:
        if self.stop.is_set():
            return
        key = pr.partition.key
        self.started = True
        try:  # an earlier attempt's output of this partition, from here on, is replaced
            self._retry(lambda: self.sink.start_partition(key, pr.seq))
            self._retry(lambda: self.dead_letters.start_partition(self.dead_letter_key(key), pr.seq))
        except Exception as exc:
            pr.fail(f"sink ({key}, starting)", exc, self._label("sink"))
            self.stop.set()
            return
        to_transform: queue.SimpleQueue[Any] = queue.SimpleQueue()
        to_write: queue.SimpleQueue[Any] = queue.SimpleQueue()
        name = pr.partition.key
        transformer = threading.Thread(target=self._transform_loop, args=(pr, to_transform, to_write),
                                       name=f"sluice-transform-{name}", daemon=True)
        writer = threading.Thread(target=self._write_loop, args=(pr, to_write), name=f"sluice-write-{name}",
                                  daemon=True)
        transformer.start()
        writer.start()
        try:
            self._read_loop(pr, to_transform)
        finally:
            to_transform.put(_END)
            transformer.join()
            writer.join()
        if pr.error:
            self.stop.set()  # one failed partition stops the others at their next batch boundary
            self.log.error("partition failed", partition=name, error=pr.error, checkpoint=pr.saved_position)
        elif pr.complete:
            m = self.metrics.snapshot()
            self.log.info("partition done", partition=name, batches=pr.seq, run_read=m["read"],
                          run_written=m["written"])

    def _acquire(self, pr: _PartitionRun) -> bool:
        while not self.slots.acquire(timeout=0.2):
            if self.stop.is_set() or pr.failed.is_set():
                return False
        return True

    def _read_loop(self, pr: _PartitionRun, out: queue.SimpleQueue[Any]) -> None:
        batches: Any = None
        try:
            batches = self.source.read(pr.partition, pr.position)
            iterator = iter(batches)
            while not (self.stop.is_set() or pr.failed.is_set()):
                if not self._acquire(pr):
                    break
                try:
                    batch = next(iterator)
                except StopIteration:
                    self.slots.release()
                    pr.complete = True
                    break
                except BaseException:
                    self.slots.release()
                    raise
                batch.partition, batch.seq = pr.partition.key, pr.seq
                pr.seq += 1
                for dl in batch.dead_letters:
                    dl.stage, dl.plugin = "source", self.job.source.type
                self.metrics.add("read", len(batch.records) + len(batch.dead_letters))
                out.put(batch)
        except Exception as exc:
            pr.fail("source", exc, self._label("source"))
        finally:
            close = getattr(batches, "close", None)  # generators close PITs/scrolls in their finally
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self.log.warning("closing the source reader failed", partition=pr.partition.key,
                                     error=describe_error(exc))

    def _transform_loop(self, pr: _PartitionRun, inbox: queue.SimpleQueue[Any],
                        out: queue.SimpleQueue[Any]) -> None:
        last_seq, last_position = pr.seq - 1, pr.position
        while (item := inbox.get()) is not _END:
            if pr.discard.is_set():
                self.slots.release()  # the batch is dropped; its checkpoint was never saved
                continue
            last_seq, last_position = item.seq, item.checkpoint
            try:
                out.put(self._transform(item))
            except Exception as exc:
                self.slots.release()
                pr.fail(f"transform ({pr.partition.key}, batch {item.seq})", exc, "transform")
        if pr.complete and not pr.failed.is_set() and self.chain:
            try:
                records, dead, counts = self.chain.flush(pr.partition.key)
                self._count(counts)
                if (records or dead) and self._acquire(pr):
                    out.put(Batch(records, pr.partition.key, last_seq + 1, last_position, dead))
            except Exception as exc:
                pr.fail("transform flush", exc, "transform")
        out.put(_END)

    def _transform(self, batch: Batch) -> Batch:
        if not self.chain:
            return batch
        if self._pool is not None:
            batch, counts = self._pool.submit(apply_in_worker, batch).result()
        else:
            batch, counts = self.chain.apply(batch)
        self._count(counts)
        return batch

    def _count(self, counts: Any) -> None:
        for label, n in counts.filtered.items():
            self.metrics.add_filtered(label, n)
        if counts.created:
            self.metrics.add("created", counts.created)

    def _write_loop(self, pr: _PartitionRun, inbox: queue.SimpleQueue[Any]) -> None:
        pending = {"sink": False, "dead_letters": False}
        while (item := inbox.get()) is not _END:
            try:
                if not pr.discard.is_set():
                    self._write(pr, item, pending)
            except Exception as exc:
                pr.fail(f"sink ({pr.partition.key}, batch {item.seq})", exc, self._label("sink"))
            finally:
                self.slots.release()
        if pr.failed_stage is not None and pr.failed_stage.startswith("sink"):
            return  # open files may hold part of the failed batch: abort() discards them
        try:
            key = pr.partition.key
            self._retry(lambda: self.sink.finish_partition(key))
            self._retry(lambda: self.dead_letters.finish_partition(self.dead_letter_key(key)))
            if pr.written_seq is not None or pr.complete:
                done = pr.complete and not pr.failed.is_set()
                seq = pr.written_seq if pr.written_seq is not None else pr.seq - 1
                position = pr.written_position if pr.written_seq is not None else pr.position
                self._save(pr, seq, position, done)
        except Exception as exc:
            pr.fail(f"sink ({pr.partition.key}, finishing)", exc, self._label("sink"))

    def _retry(self, fn: Any) -> Any:
        return retry_call(fn, self.job.config.runtime.retry, metrics=self.metrics)

    def _label(self, spec_of: str) -> str:
        spec = {"source": self.job.source, "sink": self.job.destination, "dead_letters": self.job.dead_letter}[spec_of]
        return f"{spec.where} (type: {spec.type})"

    def _write(self, pr: _PartitionRun, batch: Batch, pending: dict[str, bool]) -> None:
        dead = batch.dead_letters
        if batch.records:
            result = self._retry(lambda: self.sink.write(batch))
            accounted = result.written + len(result.dead_letters)
            if accounted != len(batch.records):
                raise PermanentError(f"sink {self.job.destination.type!r} accounted for {accounted} of "
                                     f"{len(batch.records)} records in batch {batch.seq}; refusing to lose any")
            for dl in result.dead_letters:
                dl.stage, dl.plugin = "sink", self.job.destination.type
            self.metrics.add("written", result.written)
            if result.retries:
                self.metrics.add("retries", result.retries)
            pending["sink"] = not result.durable
            dead = dead + result.dead_letters
        if dead:
            self._write_dead(batch, dead, pending)
        pr.written_seq, pr.written_position = batch.seq, batch.checkpoint
        if not any(pending.values()):
            self._save(pr, batch.seq, batch.checkpoint, False)

    def _write_dead(self, batch: Batch, dead: list[DeadLetter], pending: dict[str, bool]) -> None:
        now = datetime.now(UTC).isoformat()
        for dl in dead:
            dl.partition, dl.job, dl.run_id, dl.time = batch.partition, self.job.name, self.job.run_id, now
        dl_batch = Batch([dl.to_record() for dl in dead], self.dead_letter_key(batch.partition), batch.seq)
        try:
            result = self._retry(lambda: self.dead_letters.write(dl_batch))
        except Exception as exc:
            blame(exc, self._label("dead_letters"))
            raise
        if result.written != len(dead):
            raise PermanentError(f"the dead-letter sink {self.job.dead_letter.type!r} stored {result.written} "
                                 f"of {len(dead)} dead letters; refusing to lose any")
        pending["dead_letters"] = not result.durable
        for dl in dead:
            self.metrics.add_dead(dl.stage if dl.stage != "transform" else step_label(dl.step or 0, dl.plugin), 1)

    def _save(self, pr: _PartitionRun, seq: int, position: Any, done: bool) -> None:
        state = {"seq": seq, "position": position, "done": done}
        self._retry(lambda: self.checkpoints.save(self.job.name, self.job.run_id, pr.partition.key, state))
        pr.saved_seq, pr.saved_position = seq, position

    def _flush_run(self) -> list[PartitionFailure]:
        """Records transforms held for the whole run, written as one more partition."""
        if not self.chain:
            return []
        records, dead, counts = self.chain.flush(None)
        self._count(counts)
        if not records and not dead:
            return []
        pr = _PartitionRun(Partition(RUN_PARTITION), 0, None, complete=True)
        self.flushed = True
        self._retry(lambda: self.sink.start_partition(RUN_PARTITION, 0))
        self._retry(lambda: self.dead_letters.start_partition(self.dead_letter_key(RUN_PARTITION), 0))
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.slots.acquire()
        inbox.put(Batch(records, RUN_PARTITION, 0, None, dead))
        inbox.put(_END)
        self._write_loop(pr, inbox)
        return [PartitionFailure(RUN_PARTITION, pr.error)] if pr.error else []

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
            hint = "" if first.bug else "; run again with --resume to continue"
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
