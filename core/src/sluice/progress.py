"""A live progress line on a terminal, fed from the run's metrics (never from the hot path)."""

from __future__ import annotations

import threading
import time
from typing import Any

from .metrics import Metrics


class LiveProgress:
    """Shows read / written / dead letters and docs/s while a run goes on (rich, on stderr)."""

    def __init__(self, metrics: Metrics, job: str, interval_s: float = 0.25) -> None:
        self.metrics, self.job, self.interval_s = metrics, job, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LiveProgress:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                  console=Console(stderr=True), transient=True)
        self._task = self._progress.add_task(self.job, stats="starting", total=None)
        self._progress.start()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sluice-progress")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._progress.update(self._task, stats=self._stats())

    def _stats(self) -> str:
        m = self.metrics.snapshot()
        elapsed = max(time.monotonic() - self._started, 1e-6)
        dead = sum(m["dead_lettered"].values())
        return f"read {m['read']:,}  written {m['written']:,}  dead {dead:,}  {m['written'] / elapsed:,.0f} docs/s"

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._progress.stop()
