"""Thread-safe rate limiting and in-flight bounds shared by every thread using one component."""

from __future__ import annotations

import threading
import time

from sluice import SluiceError


class Cancelled(SluiceError):
    """The run is stopping (``ctx.stop`` was set) while a call waited for its turn."""


class RateLimiter:
    """A token bucket that hands out send times under a lock, so it stays honest under contention.

    Each caller reserves the next free slot and sleeps until it: with ``burst`` 1, any N calls
    are spread over at least ``(N - 1) / rate`` seconds whatever the number of threads. An idle
    bucket refills up to ``burst`` tokens, never more.
    """

    def __init__(self, rate_per_sec: float, burst: int = 1) -> None:
        self.interval = 1.0 / rate_per_sec
        self.burst = max(1, burst)
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event | None = None) -> float:
        """Wait for a token; returns the seconds waited. Raises ``Cancelled`` when ``stop`` is set."""
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now - (self.burst - 1) * self.interval)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            if stop is None:
                time.sleep(delay)
            elif stop.wait(delay):
                raise Cancelled("stopped while waiting for the rate limiter (the run is stopping)")
        return max(delay, 0.0)


class InFlight:
    """At most ``limit`` calls at once across all threads; waiting callers give up when ``stop`` is set."""

    def __init__(self, limit: int, stop: threading.Event | None = None) -> None:
        self._sem = threading.BoundedSemaphore(limit)
        self._stop = stop

    def __enter__(self) -> InFlight:
        while not self._sem.acquire(timeout=0.1):
            if self._stop is not None and self._stop.is_set():
                raise Cancelled("stopped while waiting for an in-flight slot (the run is stopping)")
        return self

    def __exit__(self, *exc: object) -> None:
        self._sem.release()
