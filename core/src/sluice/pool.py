"""A process pool for CPU-heavy, stateless transform chains (``transform.processes``).

Workers are spawned (forking a process that runs threads can deadlock on inherited locks) and
rebuild the same registry from the same plugin modules, then the chain from the job's step blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .chain import Chain
from .context import RunContext
from .records import Batch
from .registry import get_registry

if TYPE_CHECKING:
    from .components import Transform
    from .config import Job

_worker_chain: Chain | None = None


def start_pool(job: Job) -> Any:
    """A ``ProcessPoolExecutor`` whose workers hold the job's chain, opened; submit ``apply_in_worker``."""
    import multiprocessing
    import types
    from concurrent.futures import ProcessPoolExecutor

    registry = job.registry or get_registry()
    payload = {
        # the child rebuilds the same registry from the same plugin modules (entry points or not)
        "plugins": [p.__name__ for p in registry.pm.get_plugins() if isinstance(p, types.ModuleType)],
        "steps": [spec.raw for spec in job.steps],
        "job": job.name,
        "run_id": job.run_id,
        "interval": (job.interval.start, job.interval.end),
        "runtime": job.config.runtime.model_dump(),
        "variables": job.variables,
    }
    return ProcessPoolExecutor(job.config.transform.processes, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(payload,))


def _init_worker(payload: dict[str, Any]) -> None:
    import importlib

    from . import secrets
    from .registry import Registry
    from .settings import RuntimeConfig
    from .templating import Interval, Renderer

    global _worker_chain
    registry = Registry.from_plugins(*(importlib.import_module(n) for n in payload["plugins"]), builtins=False)
    steps: list[Transform] = []
    types: list[str] = []
    ctx = RunContext(
        job_name=payload["job"], run_id=payload["run_id"], interval=Interval(*payload["interval"]),
        runtime=RuntimeConfig.model_validate(payload["runtime"]),
        renderer=Renderer(payload["variables"], secrets.resolver(registry)),
    )
    for i, raw in enumerate(payload["steps"]):
        klass, config = registry.validate("transform", raw, f"transform.steps[{i}]")
        step = klass(config)
        step.open(ctx)
        steps.append(step)  # type: ignore[arg-type]
        types.append(raw["type"])
    _worker_chain = Chain(steps, types)


def apply_in_worker(batch: Batch) -> tuple[Batch, Any]:
    """Run the worker's chain over ``batch`` (in the worker process)."""
    assert _worker_chain is not None
    return _worker_chain.apply(batch)
