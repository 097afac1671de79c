"""What a component sees of the run it is part of."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from .logs import get_logger
from .metrics import Metrics
from .settings import RetryPolicy, RuntimeConfig
from .templating import Interval, Renderer

if TYPE_CHECKING:
    from .config import Job


@dataclass
class RunContext:
    """The run a component is opened for: job, interval, runtime settings, metrics, templating.

    ``stop`` is set when the run is being cancelled; long waits inside plugins (rate limiters,
    backoff) should give up when it is set. ``sink_role`` tells a sink whether it stores the run's
    records (``data``) or its dead letters (``dead_letters``).
    """

    job_name: str
    run_id: str
    interval: Interval
    runtime: RuntimeConfig
    renderer: Renderer
    metrics: Metrics = field(default_factory=Metrics)
    resume: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    sink_role: Literal["data", "dead_letters"] = "data"

    @classmethod
    def for_job(cls, job: Job, *, resume: bool = False, metrics: Metrics | None = None) -> RunContext:
        """The context of one run of ``job`` (its interval, run id, runtime settings and templating)."""
        assert job.renderer is not None, "a loaded job carries its renderer"
        return cls(job_name=job.name, run_id=job.run_id, interval=job.interval, runtime=job.config.runtime,
                   renderer=job.renderer, metrics=metrics or Metrics(), resume=resume)

    def as_dead_letters(self) -> RunContext:
        """This context for the sink that stores dead letters (same run, counters and stop event)."""
        return replace(self, sink_role="dead_letters")

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
