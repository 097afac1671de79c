"""Test kit for Sluice and its plugins: run jobs in tests, a fresh-registry fixture, and
conformance suites any source, sink or transform can run (see ``sluice.testing.conformance``).

The pytest plugin (``sluice.testing.pytest_plugin``) is registered automatically when sluice is
installed and provides the ``sluice_registry`` fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..codecs import detect, open_reader
from ..config import Job, load_job
from ..context import RunContext
from ..engine import Engine
from ..lines import iter_lines
from ..metrics import RunSummary
from ..registry import Kind, Registry, get_registry
from ..templating import Interval


def load_test_job(config: dict[str, Any] | str | Path, *, ds: str = "2024-01-01", run_id: str | None = None,
                  registry: Registry | None = None) -> Job:
    """Load a job for the day ``ds`` (default 2024-01-01)."""
    return load_job(config, interval=Interval.for_day(ds), run_id=run_id, registry=registry)


def run_job(config: dict[str, Any] | str | Path, *, ds: str = "2024-01-01", resume: bool = False,
            run_id: str | None = None, registry: Registry | None = None) -> RunSummary:
    """Load and run a job in-process; returns the summary (check ``status`` and ``reconciled``)."""
    return Engine(load_test_job(config, ds=ds, run_id=run_id, registry=registry), resume=resume).run()


def make_context(job_name: str = "test", ds: str = "2024-01-01", **runtime: Any) -> RunContext:
    """A run context for opening one component by hand in a unit test."""
    from ..settings import RuntimeConfig
    from ..templating import Renderer, template_vars

    interval = Interval.for_day(ds)
    run_id = interval.default_run_id(job_name)
    renderer = Renderer(template_vars(job_name, interval, run_id), lambda name: "")
    return RunContext(job_name, run_id, interval, RuntimeConfig(**runtime), renderer)


def build(kind: Kind, block: dict[str, Any], ctx: RunContext | None = None, registry: Registry | None = None) -> Any:
    """Validate a component block, build the component and open it."""
    registry = registry or get_registry()
    klass, config = registry.validate(kind, block, f"test {kind}")
    component = klass(config)
    component.open(ctx or make_context())
    return component


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record in a JSON Lines file or in the part files of a directory (any compression)."""
    p = Path(path)
    files = sorted(f for f in p.rglob("part-*") if f.is_file()) if p.is_dir() else [p]
    out: list[dict[str, Any]] = []
    for f in files:
        with open(f, "rb") as raw:
            out.extend(orjson.loads(line) for line in iter_lines(open_reader(raw, detect(f.name))) if line.strip())
    return out


__all__ = ["build", "load_test_job", "make_context", "read_jsonl", "run_job"]
