"""The ``prometheus`` exporter: a Pushgateway, a ``/metrics`` server, a node_exporter textfile.

- **Pushgateway**: each export is a POST to the group ``{job="<job>"}`` (plus ``grouping``): the
  families it holds replace the job's earlier ones and the others stay, so the next run replaces
  the last one's counts, and a failed run (which has no last-success time) leaves the last
  success's time in place for the "no success for 26 h" alert.
- **/metrics** (``port``, or ``sluice run --metrics-port``): served while the run lasts, from the
  run's live counts at every scrape.
- **textfile** (``textfile_dir``): ``sluice_<job>.prom`` written atomically at the end of each run,
  keeping the families of the previous file this run does not have (as the Pushgateway does).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator

from sluice.exporting import ExporterConfig, MetricsExporter, Sample


class PrometheusConfig(ExporterConfig):
    """Where a run's Prometheus metrics go: a Pushgateway, a /metrics port, a textfile directory."""

    pushgateway: str | None = Field(
        None, description="Pushgateway URL (http://pushgateway:9091): the run's metrics are pushed at its end "
                          "and every push_every_s while it lasts, grouped by job."
    )
    push_every_s: float = Field(30.0, ge=0, description="Seconds between pushes while a run lasts; 0: only at its end.")
    grouping: dict[str, str] = Field(
        default_factory=dict, description="Grouping-key labels added to job (e.g. {env: prod}) when pushing."
    )
    username: str | None = Field(None, description="Basic-auth user for the Pushgateway.")
    password: SecretStr | None = Field(None, description="Basic-auth password for the Pushgateway.")
    timeout_s: float = Field(3.0, gt=0, description="Timeout of one push, in seconds.")
    port: int | None = Field(
        None, ge=0, le=65535, description="Serve /metrics on this port while a run lasts "
                                          "(`sluice run --metrics-port` sets it)."
    )
    address: str = Field("0.0.0.0", description="Address the /metrics server listens on.")
    textfile_dir: str | None = Field(
        None, description="Directory of node_exporter's textfile collector: sluice_<job>.prom is written there "
                          "at the end of each run."
    )

    @model_validator(mode="after")
    def _goes_somewhere(self) -> PrometheusConfig:
        if self.pushgateway is None and self.port is None and self.textfile_dir is None:
            raise ValueError("set pushgateway, port or textfile_dir: where the metrics go")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


def families(samples: Sequence[Sample]) -> list[Any]:
    """prometheus-client metric families of ``samples`` (one per name: counters, gauges, histograms)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.utils import floatToGoString

    kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.name, []).append(sample)
    out = []
    for name, group in grouped.items():
        family = kinds[group[0].kind](name, group[0].help, labels=[k for k, _ in group[0].labels])
        for sample in group:
            values = [v for _, v in sample.labels]
            if sample.kind == "histogram":
                family.add_metric(values, [(floatToGoString(le), n) for le, n in sample.buckets], sample.value)
            else:
                family.add_metric(values, sample.value)
        out.append(family)
    return out


class _Collector:
    """A prometheus-client collector yielding what ``families_of()`` returns at each collection."""

    def __init__(self, families_of: Callable[[], list[Any]]) -> None:
        self.families_of = families_of

    def collect(self) -> Iterator[Any]:
        yield from self.families_of()


def _registry(families_of: Callable[[], list[Any]]) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(families_of))  # type: ignore[arg-type]
    return registry


class PrometheusExporter(MetricsExporter):
    """Pushes to a Pushgateway, serves /metrics while a run lasts, writes a node_exporter textfile."""

    type = "prometheus"
    Config = PrometheusConfig
    config: PrometheusConfig

    def __init__(self, config: PrometheusConfig) -> None:
        super().__init__(config)
        self._server: Any = None

    @property
    def every_s(self) -> float | None:
        return self.config.push_every_s if self.config.pushgateway and self.config.push_every_s > 0 else None

    def start(self, live: Callable[[], list[Sample]]) -> None:
        if self.config.port is None:
            return
        from prometheus_client import start_http_server

        self._server, _ = start_http_server(self.config.port, self.config.address,
                                            registry=_registry(lambda: families(live())))

    def export(self, job: str, samples: Sequence[Sample], *, final: bool) -> None:
        errors: list[Exception] = []
        if final and self.config.textfile_dir:
            try:
                self._write_textfile(job, samples)
            except Exception as exc:
                errors.append(exc)
        if self.config.pushgateway:
            try:
                self._push(job, samples)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _push(self, job: str, samples: Sequence[Sample]) -> None:
        from prometheus_client import pushadd_to_gateway
        from prometheus_client.exposition import basic_auth_handler, default_handler

        config = self.config
        handler: Callable[..., Any] = default_handler
        if config.username is not None and config.password is not None:
            user, password = config.username, config.password.get_secret_value()

            def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                        data: bytes) -> Callable[[], None]:
                return basic_auth_handler(url, method, timeout, headers, data, user, password)

        assert config.pushgateway is not None
        pushadd_to_gateway(config.pushgateway, job=job, registry=_registry(lambda: families(samples)),
                           grouping_key=config.grouping or None, timeout=config.timeout_s, handler=handler)

    def _write_textfile(self, job: str, samples: Sequence[Sample]) -> None:
        from prometheus_client import write_to_textfile
        from prometheus_client.parser import text_string_to_metric_families

        folder = Path(str(self.config.textfile_dir))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"sluice_{re.sub(r'[^A-Za-z0-9_.-]', '_', job)}.prom"
        new = families(samples)
        names = {f.name for f in new}
        kept = []
        if path.exists():  # what this run has no value for stays: the last success of a failed run's job
            kept = [f for f in text_string_to_metric_families(path.read_text()) if f.name not in names]
        write_to_textfile(str(path), _registry(lambda: [*new, *kept]))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
