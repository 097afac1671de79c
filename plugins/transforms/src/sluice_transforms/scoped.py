"""State a batch transform keeps for the whole run or for each partition, and the order its
records are taken in.

Partitions run in parallel, so the order in which records of different partitions reach a
run-wide state changes from run to run. Whatever such a state keeps ("the first record of each
key") is therefore decided by a stated order instead (``RecordOrder``): an ``order_by`` field when
the step has one, then the partition key, then the position in the partition. A re-run of the
interval, with any number of workers, makes the same choices.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Generic, Literal, TypeVar

from sluice import Batch

from .ordering import _asc_key
from .paths import getter

T = TypeVar("T")


class RecordOrder:
    """Sort keys of records in the stated order: ``order_by`` (ascending; missing and null last,
    values of different types by type: numbers < text < other), then partition key, then position
    (batch sequence number, index in the batch)."""

    def __init__(self, order_by: str | None) -> None:
        self._get = getter(order_by) if order_by else None

    def of(self, batch: Batch, index: int, record: dict[str, Any]) -> tuple[Any, ...]:
        """The key of ``record``, found at ``index`` of ``batch``."""
        if self._get is None:
            return (batch.partition, batch.seq, index)
        return (_asc_key(self._get(record)), batch.partition, batch.seq, index)


class ScopedState(Generic[T]):
    """One state for the run, or one per partition made on first use and forgotten at its end.

    Partitions run in parallel threads: a run-wide state is shared by all of them, so updates go
    under ``guard()``; a partition's state is only touched by that partition's thread.
    """

    def __init__(self, scope: Literal["run", "partition"], factory: Callable[[], T]) -> None:
        self.scope = scope
        self._factory = factory
        self._lock = threading.Lock()
        self._run = factory()
        self._partitions: dict[str, T] = {}

    def get(self, partition: str) -> T:
        """The state ``partition``'s records update."""
        if self.scope == "run":
            return self._run
        with self._lock:
            state = self._partitions.get(partition)
            if state is None:
                state = self._partitions[partition] = self._factory()
            return state

    def guard(self) -> AbstractContextManager[object]:
        """Hold while updating the state: a lock when it is shared by the run, else nothing."""
        return self._lock if self.scope == "run" else nullcontext()

    def take(self, partition: str | None) -> T | None:
        """At the end of ``partition`` (or of the run, for None): that scope's state, forgotten here;
        None when this scope keeps no state at that end."""
        if (partition is None) != (self.scope == "run"):
            return None
        with self._lock:
            if partition is None:
                state, self._run = self._run, self._factory()
                return state
            return self._partitions.pop(partition, None)
