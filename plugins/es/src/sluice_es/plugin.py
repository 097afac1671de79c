"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations

from sluice import hookimpl


@hookimpl
def sluice_sources() -> list[type]:
    from .source import EsSource

    return [EsSource]


@hookimpl
def sluice_sinks() -> list[type]:
    from .sink import EsSink

    return [EsSink]
