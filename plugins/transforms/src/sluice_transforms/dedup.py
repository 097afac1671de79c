"""``dedup``: drop records whose key was already seen in the partition or the run.

Which copy of a key survives is decided by a stated order (``scoped.RecordOrder``), never by
which thread got there first: within one partition that is the order the source reads it in, so
``scope: partition`` streams; across partitions running in parallel it is only known when every
partition has been read, so ``scope: run`` (and ``order_by``) hold one record per key and write
the survivors when the scope ends.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from cachetools import LRUCache, TTLCache
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sluice import Batch, ComponentConfig, ConfigError, Record, RunContext, Transform

from .keys import key_function
from .paths import split_path
from .scoped import RecordOrder, ScopedState


class Window(BaseModel):
    """Bounded memory: remember at most ``max_entries`` keys, each for at most ``ttl_s`` seconds."""

    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(1_000_000, ge=1, description="Keys remembered; the least recently seen go first. "
                                                          "When records are held (scope run, order_by), the most "
                                                          "keys held: more fails the run.")
    ttl_s: float | None = Field(None, gt=0, description="Forget a key this long after it was first seen (scope "
                                                       "partition without order_by only).")


class DedupConfig(ComponentConfig):
    """What makes two records duplicates, which one is kept, and how long to remember keys."""

    keys: list[str] = Field(default_factory=list, description="Field paths forming the key (missing and null are "
                                                              "equal). Empty: the whole record.")
    scope: Literal["run", "partition"] = Field("run", description="Duplicates across the whole run, or only "
                                                                  "within each partition.")
    order_by: str | None = Field(
        None, description="Field path: keep the copy with the smallest value (missing and null last; ties by "
                          "partition key, then position). Default: the first copy by partition key, then position.")
    window: Window | Literal["exact"] = Field(
        default_factory=Window, description="{max_entries, ttl_s} for bounded memory (a duplicate older than the "
                                            "window passes), or 'exact' to remember every key of the scope.")

    @model_validator(mode="after")
    def _window_fits(self) -> DedupConfig:
        if self.order_by:
            split_path(self.order_by)
        if self.holds and isinstance(self.window, Window) and self.window.ttl_s is not None:
            raise ValueError("window.ttl_s works with scope: partition and no order_by only: otherwise dedup holds "
                             "one record per key and picks the survivors when the scope ends")
        return self

    @property
    def holds(self) -> bool:
        """Whether the survivors are only known at the end of the scope (so records are held)."""
        return self.scope == "run" or self.order_by is not None


class _Seen:
    """A set of key digests: exact, LRU-bounded or TTL-bounded (streaming: the first copy passes)."""

    def __init__(self, window: Window | str) -> None:
        self.store: Any
        if isinstance(window, Window):
            self.store = (TTLCache(window.max_entries, window.ttl_s) if window.ttl_s
                          else LRUCache(window.max_entries))
        else:
            self.store = set()

    def first_time(self, key: bytes) -> bool:
        store = self.store
        if key in store:
            if isinstance(store, LRUCache) and not isinstance(store, TTLCache):
                store[key]  # touch: a key seen again stays in the window
            return False
        if isinstance(store, set):
            store.add(key)
        else:
            store[key] = True
        return True


class _Held:
    """Per key digest, the first record in the stated order so far (with its order key)."""

    def __init__(self, window: Window | str) -> None:
        self.best: dict[bytes, tuple[tuple[Any, ...], Record]] = {}
        self.cap = window.max_entries if isinstance(window, Window) else None

    def offer(self, key: bytes, order: tuple[Any, ...], record: Record) -> None:
        current = self.best.get(key)
        if current is None:
            if self.cap is not None and len(self.best) >= self.cap:
                raise ConfigError(f"dedup: more than {self.cap} distinct keys (window.max_entries): with scope: run "
                                  "or order_by, dedup holds one record per key until the scope ends; raise "
                                  "window.max_entries or use window: exact")
            self.best[key] = (order, record)
        elif order < current[0]:
            self.best[key] = (order, record)

    def survivors(self) -> list[Record]:
        """The kept records, in the stated order."""
        return [record for _, record in sorted(self.best.values(), key=lambda pair: pair[0])]


class Dedup(Transform):
    """Keeps one record of each key (the first in the stated order); the others are counted as
    filtered by this step.

    With ``scope: partition`` and no ``order_by`` records stream through. Otherwise every record
    is held (counted as filtered) and the survivors come out when the scope ends (counted as
    created; for ``scope: run`` under the partition key ``_run``), like aggregate groups.
    """

    type = "dedup"
    Config = DedupConfig
    config: DedupConfig
    stateless = False

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._key = key_function(self.config.keys)
        self._order = RecordOrder(self.config.order_by)
        window = self.config.window
        self._state: ScopedState[_Seen] = ScopedState(self.config.scope, lambda: _Seen(window))
        self._held: ScopedState[_Held] = ScopedState(self.config.scope, lambda: _Held(window))

    def state_scope(self) -> Literal["partition", "run"]:
        return self.config.scope

    def apply(self, batch: Batch) -> Batch:
        key, digest = self._key, hashlib.blake2b
        # 16-byte digests keep memory flat whatever the key size; collisions are ~2^-64 per pair
        keys = [digest(key(r), digest_size=16).digest() for r in batch.records]
        if self.config.holds:
            order = self._order.of
            orders = [order(batch, i, r) for i, r in enumerate(batch.records)]
            held = self._held.get(batch.partition)
            with self._held.guard():
                offer = held.offer
                for k, o, r in zip(keys, orders, batch.records, strict=True):
                    offer(k, o, r)
            batch.records = []
            return batch
        seen = self._state.get(batch.partition)
        with self._state.guard():
            first = seen.first_time
            batch.records = [r for r, k in zip(batch.records, keys, strict=True) if first(k)]
        return batch

    def flush(self, partition: str | None) -> list[Any]:
        if not self.config.holds:
            if partition is not None:
                self._state.take(partition)  # the partition is done: free its keys (scope partition)
            return []
        held = self._held.take(partition)
        return held.survivors() if held is not None else []
