"""Entry-point module: hook implementations only; prometheus-client is imported when an exporter runs."""

from __future__ import annotations

from sluice import hookimpl


@hookimpl
def sluice_metrics_exporters() -> list[type]:
    from .prometheus import PrometheusExporter
    from .statsd import StatsdExporter

    return [PrometheusExporter, StatsdExporter]
