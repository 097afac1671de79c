"""What a component sees of the run it is part of."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import RetryPolicy, RuntimeConfig
from .logs import get_logger
from .metrics import Metrics
from .templating import Interval, Renderer


@dataclass
class RunContext:
    """The run a component is opened for: job, interval, runtime settings, metrics, templating.

    ``stop`` is set when the run is being cancelled; long waits inside plugins (rate limiters,
    backoff) should give up when it is set.
    """

    job_name: str
    run_id: str
    interval: Interval
    runtime: RuntimeConfig
    renderer: Renderer
    metrics: Metrics = field(default_factory=Metrics)
    resume: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def retry(self) -> RetryPolicy:
        return self.runtime.retry

    @property
    def variables(self) -> dict[str, Any]:
        """Template variables of the run: ds, next_ds, ts, run_id, job_name, env..."""
        return self.renderer.variables

    def render(self, value: Any, where: str = "", **extra: Any) -> Any:
        """Render a templated value now (strings inside dicts and lists too)."""
        return self.renderer.render(value, where, **extra)

    def compile(self, template: str, where: str = "") -> Callable[..., str]:
        """Compile a per-record template once; call the result with ``record=...``."""
        return self.renderer.compile(template, where)

    def logger(self, component: str) -> Any:
        """A structured logger bound to this job, run and component."""
        return get_logger().bind(job=self.job_name, run_id=self.run_id, component=component)
