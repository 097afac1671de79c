"""The entry-point module: hook implementations only; the sink's module loads when a job uses it."""

from __future__ import annotations

from sluice import hookimpl


@hookimpl
def sluice_sinks() -> list[type]:
    from .sink import CsvSink

    return [CsvSink]
