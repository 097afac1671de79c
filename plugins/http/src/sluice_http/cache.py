"""A TTL cache of responses with single-flight: concurrent equal requests wait for the first one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class ResponseCache:
    """Responses keyed by the rendered request; failures are not cached."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        from cachetools import TTLCache

        self._data: TTLCache[tuple[Any, ...], Any] = TTLCache(max_entries, ttl_s)
        self._pending: dict[tuple[Any, ...], Future[Any]] = {}
        self._lock = threading.Lock()

    def get_or_fetch(self, key: tuple[Any, ...], fetch: Callable[[], Any]) -> tuple[Any, bool]:
        """``(value, hit)``; a failure is raised to every waiter, and the next equal request tries again."""
        with self._lock:
            try:
                return self._data[key], True
            except KeyError:
                pass
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = Future()
                owner = True
            else:
                owner = False
        if not owner:
            return pending.result(), True
        try:
            value = fetch()
        except BaseException as exc:
            with self._lock:
                self._pending.pop(key, None)
            pending.set_exception(exc)
            raise
        with self._lock:
            self._data[key] = value
            self._pending.pop(key, None)
        pending.set_result(value)
        return value, False
