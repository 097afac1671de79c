"""``dedup``: drop records whose key was already seen in the partition or the run."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from cachetools import LRUCache, TTLCache
from pydantic import BaseModel, ConfigDict, Field

from sluice import Batch, ComponentConfig, RunContext, Transform

from .keys import key_function
from .scoped import ScopedState


class Window(BaseModel):
    """Bounded memory: remember at most ``max_entries`` keys, each for at most ``ttl_s`` seconds."""

    model_config = ConfigDict(extra="forbid")

    max_entries: int = Field(1_000_000, ge=1, description="Keys remembered; the least recently seen go first.")
    ttl_s: float | None = Field(None, gt=0, description="Forget a key this long after it was first seen.")


class DedupConfig(ComponentConfig):
    """What makes two records duplicates, and how long to remember keys."""

    keys: list[str] = Field(default_factory=list, description="Field paths forming the key (missing and null are "
                                                              "equal). Empty: the whole record.")
    scope: Literal["run", "partition"] = Field("run", description="Duplicates across the whole run, or only "
                                                                  "within each partition.")
    window: Window | Literal["exact"] = Field(
        default_factory=Window, description="{max_entries, ttl_s} for bounded memory (a duplicate older than the "
                                            "window passes), or 'exact' to remember every key of the scope.")


class _Seen:
    """A set of key digests: exact, LRU-bounded or TTL-bounded."""

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


class Dedup(Transform):
    """Keeps the first record of each key; later duplicates are counted as filtered by this step."""

    type = "dedup"
    Config = DedupConfig
    config: DedupConfig
    stateless = False

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._key = key_function(self.config.keys)
        self._state: ScopedState[_Seen] = ScopedState(self.config.scope, lambda: _Seen(self.config.window))

    def state_scope(self) -> Literal["partition", "run"]:
        return self.config.scope

    def apply(self, batch: Batch) -> Batch:
        key, digest = self._key, hashlib.blake2b
        # 16-byte digests keep memory flat whatever the key size; collisions are ~2^-64 per pair
        keys = [digest(key(r), digest_size=16).digest() for r in batch.records]
        seen = self._state.get(batch.partition)
        with self._state.guard():
            first = seen.first_time
            batch.records = [r for r, k in zip(batch.records, keys, strict=True) if first(k)]
        return batch

    def flush(self, partition: str | None) -> list[Any]:
        if partition is not None:
            self._state.take(partition)  # the partition is done: free its keys (scope partition)
        return []
