"""Base classes for sources, sinks, transforms and checkpoint stores.

A plugin returns subclasses of these from its hooks. Each class carries a ``type`` name, optional
``aliases`` and a pydantic ``Config`` model; the registry validates the job block with ``Config``
and builds the component with the validated config. Components import heavy client libraries in
``open()``, never at module import.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from .errors import Reject
from .records import Batch, Partition, Record, WriteResult

if TYPE_CHECKING:
    from .context import RunContext


class ComponentConfig(BaseModel):
    """Base for component configs: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class Component:
    """Something a job names by ``type:``. Subclasses set ``type`` and ``Config``."""

    type: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[BaseModel]] = ComponentConfig

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    def open(self, ctx: RunContext) -> None:
        """Prepare for a run (connect, create clients). Called once, before any data moves."""
        self.ctx = ctx

    def close(self) -> None:
        """Release resources. Called once at the end of the run, also after a failure."""

    def describe(self) -> str:
        """Where this component reads or writes, for summaries (never with credentials)."""
        return self.type


class Source(Component):
    """Reads records. Work is split into partitions that the engine reads in parallel."""

    def partitions(self) -> Iterable[Partition]:
        """The independent units of work for this run, each with a stable key."""
        raise NotImplementedError

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        """Yield batches of ``partition``, resuming after ``checkpoint`` when it is given.

        Each batch carries the checkpoint reached after it; reading again from that checkpoint
        must yield exactly the records that follow. ``seq`` and ``partition`` are set by the engine.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class SinkRun:
    """What a sink's run-level calls (``prepare``, ``commit``, ``abort``) know of the run.

    These calls may come from a process that wrote nothing (a staged run's ``finalize``), so they
    get what they need here rather than from the instance's memory:

    - ``partitions``: every partition key the run wrote into this sink (the sink saw them in
      ``start_partition``); output of other partitions is an earlier attempt's and may be removed.
      None when the caller cannot know (then nothing is removed).
    - ``reports``: what ``report()`` returned in each instance that wrote (any order, one per
      process or task).
    - ``resume``: the run continues an earlier attempt of the same run.
    """

    partitions: tuple[str, ...] | None = None
    reports: tuple[dict[str, Any], ...] = ()
    resume: bool = False


class Sink(Component):
    """Writes records, in two phases that may run in different processes.

    The contract (checked by ``sluice.testing.conformance.SinkContract``):

    1. ``prepare(run)`` once per run attempt, before any write. It readies the destination and
       never removes published output: a step of a staged run may be re-run alone at any time.
    2. ``start_partition(key, seq)`` before a partition's first write in an instance: the output
       an earlier attempt wrote for that partition from batch ``seq`` on is replaced (removed
       now, or overwritten by deterministic names or ids).
    3. ``write`` / ``finish_partition`` from any number of instances and processes at once, on
       different partitions. Within an instance, calls for one partition come from one thread in
       order; calls for different partitions overlap, so per-partition state is kept apart.
    4. ``report()`` once per writing instance: a small JSON-safe dict of what ``commit`` will
       need and cannot find in the destination (e.g. the indices written).
    5. ``commit(run)`` once, possibly on a fresh instance in another process that wrote nothing:
       make the output visible (manifest, success marker, refresh) from what the destination
       holds and ``run.reports``; output of partitions outside ``run.partitions`` is removed.
       ``abort(run)`` instead after a failed attempt: never publish a success marker.
    6. ``close()`` releases resources and discards what the instance holds unfinished (open
       files, multipart uploads): unfinished output was never reported durable.

    ``ctx.sink_role`` is ``"dead_letters"`` when the engine uses the sink as the dead-letter store,
    so a storage sink can choose other default names for dead-letter files.
    """

    def prepare(self, run: SinkRun) -> None:
        """Ready the destination for a run attempt (create what must exist, drop stale uploads)."""

    def start_partition(self, partition: str, seq: int) -> None:
        """Replace what an earlier attempt wrote for ``partition`` from batch ``seq`` on."""

    def write(self, batch: Batch) -> WriteResult:
        """Write one batch; per-record failures come back as dead letters, not exceptions."""
        raise NotImplementedError

    def finish_partition(self, partition: str) -> WriteResult:
        """Make everything written for ``partition`` durable (close open files)."""
        return WriteResult()

    def report(self) -> dict[str, Any]:
        """What ``commit`` needs to know of this instance's writes (JSON-safe, small)."""
        return {}

    def commit(self, run: SinkRun) -> None:
        """Make the run's output visible (manifest, success marker). Called once after success."""

    def abort(self, run: SinkRun) -> None:
        """Clean up after a failed run attempt; never publish a success marker."""


class Transform(Component):
    """Reshapes batches. Drop a record to filter it; ``batch.reject`` it to dead-letter it.

    ``stateless`` transforms may run in a process pool; stateful ones (dedup, aggregate) must not.
    """

    stateless: ClassVar[bool] = True

    def apply(self, batch: Batch) -> Batch:
        """Return the batch with records transformed; never lose a record silently."""
        raise NotImplementedError

    def flush(self, partition: str | None) -> list[Record]:
        """Records held back, emitted at the end of a partition (``partition``) or of the run (None)."""
        return []

    def state_scope(self) -> Literal["batch", "partition", "run"]:
        """How far this step's state reaches. ``--resume`` restarts a partition (``partition``) or
        the whole run (``run``) rather than continue mid-way with state it no longer has."""
        return "batch"


class RecordTransform(Transform):
    """A transform written one record at a time; the batch loop and error routing are inherited."""

    def process(self, record: Record) -> Record | None:
        """Return the new record, or None to filter it out. Raise ``Reject`` to dead-letter it."""
        raise NotImplementedError

    def apply(self, batch: Batch) -> Batch:
        out: list[Record] = []
        process = self.process
        for record in batch.records:
            try:
                result = process(record)
            except Reject as exc:
                batch.reject(record, exc.reason, exc.error_type)
                continue
            except Exception as exc:  # a record that breaks user code is dead-lettered, not lost
                batch.reject(record, f"{type(exc).__name__}: {exc}", type(exc).__name__)
                continue
            if result is not None:
                out.append(result)
        batch.records = out
        return batch


class CheckpointStore(Component):
    """Keeps each partition's checkpoint for one (job, run_id) so ``--resume`` can continue."""

    def load(self, job: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Every saved partition state for the run: ``{partition: {"seq", "position", "done"}}``."""
        raise NotImplementedError

    def save(self, job: str, run_id: str, partition: str, state: dict[str, Any]) -> None:
        """Persist one partition's state; must be atomic (a crash leaves the old or the new)."""
        raise NotImplementedError

    def clear(self, job: str, run_id: str) -> None:
        """Forget the run's checkpoints (a fresh run without ``--resume``)."""
        raise NotImplementedError
