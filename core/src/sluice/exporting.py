"""Metrics exporters: the names and labels every exporter uses, and the class exporters extend.

Core turns a run's counters into ``Sample``s under the common names below; an exporter (a class a
plugin returns from ``sluice_metrics_exporters()``; sluice-metrics ships ``prometheus`` and
``statsd``) only sends them somewhere. A sample is a counter, a gauge, or a histogram (the time
per batch of each stage), which carries its buckets and its latest observations. A job turns
exporters on with a ``metrics:`` block keyed by exporter type; ``$SLUICE_METRICS`` holds the same
mapping (YAML or JSON) for every job, and the job's fields win over it field by field
(``prometheus: null`` turns one off for a job).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError, format_validation_error
from .metrics import COMPONENTS, OTHER, Histogram

if TYPE_CHECKING:
    from .registry import Registry

METRICS_ENV = "SLUICE_METRICS"

RECORDS = "sluice_records_total"
RETRIES = "sluice_retries_total"
BATCH_SECONDS = "sluice_batch_seconds"
DURATION = "sluice_run_duration_seconds"
LAST_SUCCESS = "sluice_run_last_success_timestamp_seconds"
STATUS = "sluice_run_status"
PARTITIONS = "sluice_partitions"

HELP = {
    RECORDS: "Records of the run by stage and outcome (read, written, filtered, dead, created).",
    RETRIES: "Retries of transient failures in the run, by the component that retried.",
    BATCH_SECONDS: "Seconds each batch took in a stage: read from the source, transformed, written to the sink.",
    DURATION: "Seconds the run has taken (so far, while it runs).",
    LAST_SUCCESS: "Unix time the job's last successful run ended.",
    STATUS: "Outcome of the job's last run: 1 succeeded, 0 failed.",
    PARTITIONS: "Partitions of the run by state (total, done, failed).",
}
COMMON = frozenset(HELP)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Sample:
    """One value of one metric: ``sluice_records_total{job="daily",stage="source",outcome="read"} 1200``.

    A ``histogram`` sample's ``value`` is the sum of its observations; ``buckets`` holds
    ``(upper bound, observations at or below it)`` ending with ``(inf, count)``, and
    ``observations`` the latest ones, oldest first (an exporter of individual timings, StatsD,
    sends those since its last export: ``count`` minus the count it last saw).
    """

    name: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()
    kind: Kind = "counter"
    buckets: tuple[tuple[float, int], ...] = ()
    observations: tuple[float, ...] = ()

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def count(self) -> int:
        """Observations of a histogram (0 for other kinds)."""
        return self.buckets[-1][1] if self.buckets else 0

    @property
    def help(self) -> str:
        return HELP.get(self.name, "A plugin counter of the run.")


class ExporterConfig(BaseModel):
    """Base for exporter configs: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class MetricsExporter:
    """Sends a run's samples somewhere. Subclasses set ``type`` and ``Config``.

    Core calls, from one thread at a time: ``start`` when a run begins in this process (pull
    exporters serve ``live()`` from here), ``export(job, samples, final=False)`` every ``every_s``
    seconds while it runs, ``export(job, samples, final=True)`` once at its end, and ``close``.
    An export replaces, for the job, the metric families it holds and keeps the others (a failed
    run's export has no ``sluice_run_last_success_timestamp_seconds``: the last success stays).

    Exporting never fails or slows a run: raise on failure (a gateway down) and core logs the first
    failure of each exporter once; keep network timeouts short.
    """

    type: ClassVar[str]
    Config: ClassVar[type[BaseModel]] = ExporterConfig

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    @property
    def every_s(self) -> float | None:
        """Seconds between exports while a run lasts; None: only at the end."""
        return None

    def start(self, live: Callable[[], list[Sample]]) -> None:
        """A run began in this process; ``live()`` gives its samples now (for a ``/metrics`` server)."""

    def export(self, job: str, samples: Sequence[Sample], *, final: bool) -> None:
        """Send ``samples`` of ``job``'s run: now and then while it runs, once with ``final`` at its end."""

    def close(self) -> None:
        """The run is over: stop serving, close sockets."""


# -- samples ----------------------------------------------------------------------------------
def _sample(name: str, value: float, job: str, kind: Kind = "counter", **labels: str) -> Sample:
    return Sample(name, float(value), (("job", job), *labels.items()), kind)


def plugin_metric(counter: str) -> str:
    """A plugin counter's metric name: ``es_bulk_items_retried`` → ``sluice_es_bulk_items_retried_total``."""
    name = f"sluice_{re.sub(r'[^A-Za-z0-9_]', '_', counter).strip('_')}_total"
    return name if name not in COMMON else f"sluice_plugin_{name.removeprefix('sluice_')}"


def histogram_sample(name: str, histogram: Histogram, job: str, **labels: str) -> Sample:
    """A histogram's sample: its sum as the value, its cumulative buckets and its latest observations."""
    return Sample(name, float(histogram.sum), (("job", job), *labels.items()), "histogram",
                  tuple(histogram.cumulative()), histogram.recent)


def count_samples(job: str, counts: Mapping[str, Any], duration_s: float) -> list[Sample]:
    """What a run has counted so far: records by stage and outcome, retries by component, the time
    per batch of each stage, plugin counters, time.

    ``counts`` has the keys of ``Metrics.snapshot()``: read, written, created, retries, retries_by
    (per component), filtered (per step), dead_lettered (per stage), counters (plugin counters);
    and optionally batch_seconds (``Histogram`` per stage, ``Metrics.batch_seconds()``).
    """
    samples = [
        _sample(RECORDS, counts.get("read", 0), job, stage="source", outcome="read"),
        _sample(RECORDS, counts.get("written", 0), job, stage="sink", outcome="written"),
    ]
    if counts.get("created"):
        samples.append(_sample(RECORDS, counts["created"], job, stage="transform", outcome="created"))
    samples += [_sample(RECORDS, n, job, stage=step, outcome="filtered")
                for step, n in sorted((counts.get("filtered") or {}).items())]
    samples += [_sample(RECORDS, n, job, stage=stage, outcome="dead")
                for stage, n in sorted((counts.get("dead_lettered") or {}).items())]
    samples += [_sample(RETRIES, n, job, component=component)
                for component, n in _retries_by(counts.get("retries", 0), counts.get("retries_by") or {}).items()]
    samples += [histogram_sample(BATCH_SECONDS, histogram, job, stage=stage)
                for stage, histogram in (counts.get("batch_seconds") or {}).items()
                if isinstance(histogram, Histogram)]  # not the JSON of a summary's to_dict()
    samples += [_sample(plugin_metric(name), n, job) for name, n in sorted((counts.get("counters") or {}).items())]
    samples.append(_sample(DURATION, duration_s, job, "gauge"))
    return samples


def _retries_by(total: int, by: Mapping[str, int]) -> dict[str, int]:
    """Retries per component, every component listed (0 when it made none), so a series exists
    before its first retry; what no component claims (counts that name none) goes to ``other``."""
    out = {component: int(by.get(component, 0)) for component in COMPONENTS}
    out.update({component: int(n) for component, n in sorted(by.items()) if component not in out})
    unclaimed = int(total) - sum(out.values())
    if unclaimed > 0:
        out[OTHER] = out.get(OTHER, 0) + unclaimed
    return out


def outcome_samples(job: str, status: str, *, finished_at: float,
                    partitions: tuple[int, int, int] | None = None) -> list[Sample]:
    """The run's verdict: status, the last success's time (when it succeeded), and partitions
    (total, done, failed) when known."""
    samples = [_sample(STATUS, 1 if status == "succeeded" else 0, job, "gauge")]
    if status == "succeeded":
        samples.append(_sample(LAST_SUCCESS, finished_at, job, "gauge"))
    if partitions is not None:
        for state, n in zip(("total", "done", "failed"), partitions, strict=True):
            samples.append(_sample(PARTITIONS, n, job, "gauge", state=state))
    return samples


# -- configuration ----------------------------------------------------------------------------
def exporter_classes(registry: Registry) -> dict[str, type[MetricsExporter]]:
    """Exporter types of the installed plugins (``sluice_metrics_exporters()``), as the registry
    collected them: two plugins giving one name fail when it loads, a broken one is a failure."""
    return dict(registry.types["metrics_exporter"])


def _unknown(name: str, known: Mapping[str, Any]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (f"{name}: unknown metrics exporter {name!r}.{hint} Known exporters: {', '.join(sorted(known)) or '(none)'}"
            + ("" if known else "; install sluice-metrics (pip install sluice-metrics) for prometheus and statsd"))


def validate_blocks(blocks: Mapping[str, Any] | None, registry: Registry | None = None) -> list[str]:
    """Problems with a ``metrics:`` mapping (empty when it is valid): unknown exporters, and each
    block checked with its exporter's ``Config``."""
    if not blocks:
        return []
    if registry is None:
        from .registry import get_registry

        registry = get_registry()
    known = exporter_classes(registry)
    problems: list[str] = []
    for name, block in blocks.items():
        if block is None:
            continue
        if name not in known:
            problems.append(_unknown(name, known))
            continue
        try:
            known[name].Config.model_validate(block)
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, name, known[name].Config).problems)
    return problems


def env_blocks() -> dict[str, Any]:
    """``$SLUICE_METRICS`` as a mapping (empty when unset); a ConfigError when it is not one."""
    text = os.environ.get(METRICS_ENV, "").strip()
    if not text:
        return {}
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"${METRICS_ENV}: not YAML or JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict | None) for v in value.values()):
        raise ConfigError(f"${METRICS_ENV}: expected a mapping of exporter type to its options, "
                          'e.g. {"prometheus": {"pushgateway": "http://pushgateway:9091"}}')
    return value


def merged_blocks(*layers: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Exporter blocks merged field by field, later layers winning; a None block turns one off."""
    merged: dict[str, dict[str, Any] | None] = {}
    for layer in layers:
        for name, block in (layer or {}).items():
            merged[name] = None if block is None else {**(merged.get(name) or {}), **block}
    return {name: block for name, block in merged.items() if block is not None}


def build_exporters(blocks: Mapping[str, dict[str, Any]], registry: Registry) -> list[MetricsExporter]:
    """One exporter per block; a ConfigError listing every problem when a block is invalid."""
    problems = validate_blocks(blocks, registry)
    if problems:
        raise ConfigError(f"metrics: {problems[0]}", [f"metrics: {p}" for p in problems])
    known = exporter_classes(registry)
    return [known[name](known[name].Config.model_validate(block)) for name, block in blocks.items()]


__all__ = ["BATCH_SECONDS", "DURATION", "LAST_SUCCESS", "METRICS_ENV", "PARTITIONS", "RECORDS", "RETRIES",
           "STATUS", "ExporterConfig", "MetricsExporter", "Sample", "build_exporters", "count_samples",
           "env_blocks", "histogram_sample", "merged_blocks", "outcome_samples", "plugin_metric",
           "validate_blocks"]
