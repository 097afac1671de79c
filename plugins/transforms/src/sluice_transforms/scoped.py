"""State a batch transform keeps for the whole run or for each partition."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


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
