"""One partition's run: three threads (read → transform → write) connected by queues, the
backpressure slot each batch holds, and the ledger of where the partition stands.

A batch takes a run-wide slot before it is read and gives it back once it is written or dropped
(``Slot.release`` is idempotent), so at most ``max_in_flight_batches`` batches exist at once. The
``Ledger`` is the one record of the partition's positions: the next batch number, the last batch
handed to the sinks, which sinks still buffer it, and the last checkpoint saved.

Each thread also keeps the partition's books, once per batch: the time the batch took in its stage
(``Metrics.time_batch``), the partition's counts (``PartitionStats``), and which component it is
calling (``acting``), so the retries counted meanwhile land on that component.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .chain import step_label
from .errors import PermanentError, blame, bug_report, describe_error, is_bug
from .metrics import PartitionStats, acting
from .records import Batch, DeadLetter, Partition

if TYPE_CHECKING:
    from .engine import Engine

_END = object()


class Slot:
    """One batch's share of the run-wide budget; released once, however often ``release`` is called."""

    def __init__(self, semaphore: threading.BoundedSemaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._semaphore.release()


class Slots:
    """At most ``n`` batches alive across the run (read, not yet written): bounds memory, and makes
    a slow sink slow every source (backpressure)."""

    def __init__(self, n: int) -> None:
        self._semaphore = threading.BoundedSemaphore(n)

    def take(self, give_up: Callable[[], bool]) -> Slot | None:
        """Wait for a slot; None when ``give_up()`` turns true while waiting (the run stops)."""
        while not self._semaphore.acquire(timeout=0.2):
            if give_up():
                return None
        return Slot(self._semaphore)


@dataclass
class Ledger:
    """Where one partition stands; what its checkpoint may say.

    A batch is durable once every sink that took it reports so; a sink that buffers (an open file)
    makes it durable later, at a durable write or at the end of the partition.
    """

    next_seq: int  # the number the next batch read gets
    resume_from: Any  # the source position reading starts after
    written: tuple[int, Any] | None = None  # (seq, checkpoint) of the last batch handed to the sinks
    saved: tuple[int, Any] | None = None  # (seq, checkpoint) last saved
    buffering: set[str] = field(default_factory=set)  # sinks holding records not yet durable

    def number(self) -> int:
        """The next batch's sequence number."""
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        return seq

    def wrote(self, seq: int, checkpoint: Any, buffered: dict[str, bool]) -> bool:
        """Note a batch handed to the sinks; True when everything so far is durable (save now)."""
        self.written = (seq, checkpoint)
        for sink, pending in buffered.items():
            if pending:
                self.buffering.add(sink)
            else:
                self.buffering.discard(sink)
        return not self.buffering

    def at_end(self) -> tuple[int, Any]:
        """The position to save once the sinks flushed the partition: the last batch written, or
        (nothing written) where reading stopped."""
        self.buffering.clear()
        return self.written if self.written is not None else (self.next_seq - 1, self.resume_from)


@dataclass
class PartitionRun:
    """One partition while it runs: its ledger, whether it finished, and how it failed."""

    partition: Partition
    ledger: Ledger
    complete: bool = False  # the source was read to the end
    error: str | None = None
    bug: bool = False  # a programming error: resuming would only meet it again
    failed_stage: str | None = None
    failed_at: float = float("inf")
    failed: threading.Event = field(default_factory=threading.Event)
    discard: threading.Event = field(default_factory=threading.Event)  # drop queued batches (downstream failed)
    stats: PartitionStats | None = None  # its counts in the run's metrics, once it started (Pipeline.books)

    @property
    def key(self) -> str:
        return self.partition.key

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


class Pipeline:
    """Runs partitions for an engine: its components, counters, slots and stop event."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine

    def books(self, pr: PartitionRun) -> PartitionStats:
        """The partition's counts in the run's metrics, its clock started on first use."""
        if pr.stats is None:
            pr.stats = self.e.metrics.partition(pr.key)
            pr.stats.start()
        return pr.stats

    def run(self, pr: PartitionRun) -> None:
        """Read, transform and write one partition, overlapping the three in threads."""
        e = self.e
        self.books(pr)
        to_transform: queue.SimpleQueue[Any] = queue.SimpleQueue()
        to_write: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threads = [threading.Thread(target=self._transform_loop, args=(pr, to_transform, to_write),
                                    name=f"sluice-transform-{pr.key}", daemon=True),
                   threading.Thread(target=self.write_loop, args=(pr, to_write), name=f"sluice-write-{pr.key}",
                                    daemon=True)]
        for t in threads:
            t.start()
        try:
            with acting("source"):
                self._read_loop(pr, to_transform)
        finally:
            to_transform.put(_END)
            for t in threads:
                t.join()
        if pr.error:
            e.stop.set()  # one failed partition stops the others at their next batch boundary
            e.log.error("partition failed", partition=pr.key, error=pr.error, checkpoint=pr.ledger.saved)
        elif pr.complete:
            m = e.metrics.snapshot()
            e.log.info("partition done", partition=pr.key, batches=pr.ledger.next_seq, run_read=m["read"],
                       run_written=m["written"])

    def _give_up(self, pr: PartitionRun) -> Callable[[], bool]:
        return lambda: self.e.stop.is_set() or pr.failed.is_set()

    def _read_loop(self, pr: PartitionRun, out: queue.SimpleQueue[Any]) -> None:
        e, stats, clock = self.e, self.books(pr), time.perf_counter
        batches: Any = None
        give_up = self._give_up(pr)
        try:
            batches = e.source.read(pr.partition, pr.ledger.resume_from)
            iterator = iter(batches)
            while not give_up():
                slot = e.slots.take(give_up)
                if slot is None:
                    break
                started = clock()
                try:
                    batch = next(iterator)
                except StopIteration:
                    slot.release()
                    pr.complete = True
                    break
                except BaseException:
                    slot.release()
                    raise
                e.metrics.time_batch("source", clock() - started)
                batch.partition, batch.seq = pr.key, pr.ledger.number()
                for dl in batch.dead_letters:
                    dl.stage, dl.plugin = "source", e.job.source.type
                n = len(batch.records) + len(batch.dead_letters)
                stats.read += n
                e.metrics.add("read", n)
                out.put((batch, slot))
        except Exception as exc:
            pr.fail("source", exc, e.label("source"))
        finally:
            close = getattr(batches, "close", None)  # generators close PITs/scrolls in their finally
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    e.log.warning("closing the source reader failed", partition=pr.key, error=describe_error(exc))

    def _transform_loop(self, pr: PartitionRun, inbox: queue.SimpleQueue[Any], out: queue.SimpleQueue[Any]) -> None:
        with acting("transform"):
            self._transform_batches(pr, inbox, out)

    def _transform_batches(self, pr: PartitionRun, inbox: queue.SimpleQueue[Any], out: queue.SimpleQueue[Any]) -> None:
        e, stats, clock = self.e, self.books(pr), time.perf_counter
        last_seq, last_position = pr.ledger.next_seq - 1, pr.ledger.resume_from
        while (item := inbox.get()) is not _END:
            batch, slot = item
            if pr.discard.is_set():
                slot.release()  # the batch is dropped; its checkpoint was never saved
                continue
            last_seq, last_position = batch.seq, batch.checkpoint
            if not e.chain:
                out.put((batch, slot))
                continue
            n_in, dead_in = len(batch.records), len(batch.dead_letters)
            try:
                started = clock()
                done = e.transform(batch)
                e.metrics.time_batch("transform", clock() - started)
            except Exception as exc:
                slot.release()
                pr.fail(f"transform ({pr.key}, batch {batch.seq})", exc, "transform")
                continue
            # what the steps did to the partition, from the batch's sizes (the run's totals per
            # step come from the chain): records neither kept nor rejected were filtered
            removed = n_in - len(done.records) - (len(done.dead_letters) - dead_in)
            if removed > 0:
                stats.filtered += removed
            elif removed:
                stats.created -= removed
            out.put((done, slot))
        if pr.complete and not pr.failed.is_set() and e.chain:
            try:
                records, dead, counts = e.chain.flush(pr.key)
                e.count(counts)
                stats.filtered += sum(counts.filtered.values())
                stats.created += counts.created
                if records or dead:
                    slot = e.slots.take(self._give_up(pr))
                    if slot is not None:
                        out.put((Batch(records, pr.key, last_seq + 1, last_position, dead), slot))
            except Exception as exc:
                pr.fail("transform flush", exc, "transform")
        out.put(_END)

    def write_loop(self, pr: PartitionRun, inbox: queue.SimpleQueue[Any]) -> None:
        """Write what arrives, then make the partition durable and save where it stands."""
        stats = self.books(pr)
        try:
            with acting("destination"):
                self._write_batches(pr, inbox, stats)
        finally:
            stats.end()  # the writer is the last of a partition's threads to finish

    def _write_batches(self, pr: PartitionRun, inbox: queue.SimpleQueue[Any], stats: PartitionStats) -> None:
        e, clock = self.e, time.perf_counter
        while (item := inbox.get()) is not _END:
            batch, slot = item
            try:
                if not pr.discard.is_set():
                    started = clock()
                    self._write(pr, batch, stats)
                    e.metrics.time_batch("sink", clock() - started)
            except Exception as exc:
                pr.fail(f"sink ({pr.key}, batch {batch.seq})", exc, e.label("sink"))
            finally:
                slot.release()
        if pr.failed_stage is not None and pr.failed_stage.startswith("sink"):
            return  # open files may hold part of the failed batch: close() discards them
        try:
            e.retry(lambda: e.sink.finish_partition(pr.key))
            with acting("dead_letter"):
                e.retry(lambda: e.dead_letters.finish_partition(e.dead_letter_key(pr.key)))
            if pr.ledger.written is not None or pr.complete:
                seq, position = pr.ledger.at_end()
                self._save(pr, seq, position, pr.complete and not pr.failed.is_set())
        except Exception as exc:
            pr.fail(f"sink ({pr.key}, finishing)", exc, e.label("sink"))

    def _write(self, pr: PartitionRun, batch: Batch, stats: PartitionStats) -> None:
        e = self.e
        dead = batch.dead_letters
        buffered: dict[str, bool] = {}
        if batch.records:
            result = e.retry(lambda: e.sink.write(batch))
            accounted = result.written + len(result.dead_letters)
            if accounted != len(batch.records):
                raise PermanentError(f"sink {e.job.destination.type!r} accounted for {accounted} of "
                                     f"{len(batch.records)} records in batch {batch.seq}; refusing to lose any")
            for dl in result.dead_letters:
                dl.stage, dl.plugin = "sink", e.job.destination.type
            stats.written += result.written
            e.metrics.add("written", result.written)
            if result.retries:
                e.metrics.add("retries", result.retries, component="destination")
            buffered["sink"] = not result.durable
            dead = dead + result.dead_letters
        if dead:
            with acting("dead_letter"):
                buffered["dead_letters"] = not self._write_dead(batch, dead)
            stats.dead += len(dead)
        if pr.ledger.wrote(batch.seq, batch.checkpoint, buffered):
            self._save(pr, batch.seq, batch.checkpoint, False)

    def _write_dead(self, batch: Batch, dead: list[DeadLetter]) -> bool:
        """Store dead letters; True when they are durable."""
        e = self.e
        now = datetime.now(UTC).isoformat()
        for dl in dead:
            dl.partition, dl.job, dl.run_id, dl.time = batch.partition, e.job.name, e.job.run_id, now
        dl_batch = Batch([dl.to_record() for dl in dead], e.dead_letter_key(batch.partition), batch.seq)
        try:
            result = e.retry(lambda: e.dead_letters.write(dl_batch))
        except Exception as exc:
            blame(exc, e.label("dead_letters"))
            raise
        if result.written != len(dead):
            raise PermanentError(f"the dead-letter sink {e.job.dead_letter.type!r} stored {result.written} "
                                 f"of {len(dead)} dead letters; refusing to lose any")
        for stage, n in Counter(dl.stage if dl.stage != "transform" else step_label(dl.step or 0, dl.plugin)
                                for dl in dead).items():
            e.metrics.add_dead(stage, n)
        return result.durable

    def _save(self, pr: PartitionRun, seq: int, position: Any, done: bool) -> None:
        e = self.e
        state = {"seq": seq, "position": position, "done": done, "spec": pr.partition.fingerprint}
        with acting("checkpoints"):
            e.retry(lambda: e.checkpoints.save(e.job.name, e.job.run_id, pr.key, state))
        pr.ledger.saved = (seq, position)


def end_marker() -> object:
    """What a producer puts on a pipeline queue after its last batch."""
    return _END
