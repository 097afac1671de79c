"""The ``statsd`` exporter: the run's metrics over UDP, with optional DogStatsD tags.

Counters go out as what they grew since the last send (StatsD adds them up), gauges as values, and
histograms (the time per batch) as one timing per observation since the last send, in
milliseconds: ``sluice.daily.batch.sink:12.5|ms``. Without tags the labels become parts of the name,
job first: ``sluice.daily.records.source.read:1200|c``; with ``tags: true``:
``sluice.records:1200|c|#job:daily,stage:source,outcome:read``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from sluice.exporting import ExporterConfig, MetricsExporter, Sample

MAX_PACKET = 1432  # bytes per datagram: fits an Ethernet MTU with IP and UDP headers


class StatsdConfig(ExporterConfig):
    """Where StatsD lines go, and how labels are written."""

    host: str = Field("127.0.0.1", description="StatsD (or DogStatsD agent) host.")
    port: int = Field(8125, ge=1, le=65535, description="StatsD UDP port.")
    prefix: str = Field("sluice", description="First part of every metric name.")
    tags: bool = Field(False, description="DogStatsD tags (|#job:...,stage:...) instead of labels in the name.")
    constant_tags: dict[str, str] = Field(
        default_factory=dict, description="Tags added to every line (with tags: true), e.g. {env: prod}."
    )
    flush_every_s: float = Field(10.0, ge=0, description="Seconds between sends while a run lasts; 0: only at its end.")


def _part(value: str) -> str:
    """A label value as one part of a dotted StatsD name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", value).strip("_") or "_"


def _tag(value: str) -> str:
    """A DogStatsD tag key or value: no separators of the line format."""
    return re.sub(r"[|,#\s]", "_", value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class StatsdExporter(MetricsExporter):
    """Sends the run's counters (as increments) and gauges to StatsD over UDP."""

    type = "statsd"
    Config = StatsdConfig
    config: StatsdConfig

    def __init__(self, config: StatsdConfig) -> None:
        super().__init__(config)
        self._sent: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}  # counters, and histograms' counts
        self._socket: socket.socket | None = None
        self._address: Any = None

    @property
    def every_s(self) -> float | None:
        return self.config.flush_every_s or None

    def line(self, sample: Sample, value: float, kind: str, rate: float = 1.0) -> str:
        """One StatsD line of ``sample`` with ``value`` (``c`` counter increment, ``g`` gauge, ``ms``
        timing; ``rate`` below 1 when the timings sent are a sample of those observed)."""
        config = self.config
        base = sample.name.removeprefix("sluice_").removesuffix("_total")
        if kind == "ms":
            base = base.removesuffix("_seconds")  # the unit is in the type: sluice.daily.batch.sink:12.5|ms
        labels = sample.label_dict
        sampled = f"|@{rate:.6g}" if rate < 1 else ""
        if config.tags:
            tags = {**config.constant_tags, **labels}
            suffix = "|#" + ",".join(f"{_tag(k)}:{_tag(v)}" for k, v in tags.items()) if tags else ""
            return f"{config.prefix}.{base}:{_number(value)}|{kind}{sampled}{suffix}"
        job = labels.pop("job", "")
        parts = [config.prefix, _part(job), base, *(_part(v) for v in labels.values())]
        return f"{'.'.join(p for p in parts if p)}:{_number(value)}|{kind}{sampled}"

    def lines(self, samples: Sequence[Sample]) -> list[str]:
        """The lines for ``samples``: counters as their growth since the last call, gauges as they
        are, histograms as a timing per observation since the last call."""
        out = []
        for sample in samples:
            if sample.kind == "counter":
                key = (sample.name, sample.labels)
                delta = sample.value - self._sent.get(key, 0.0)
                self._sent[key] = sample.value
                if delta:
                    out.append(self.line(sample, delta, "c"))
            elif sample.kind == "histogram":
                out.extend(self._timings(sample))
            else:
                out.append(self.line(sample, sample.value, "g"))
        return out

    def _timings(self, sample: Sample) -> list[str]:
        """One ``|ms`` line per batch timed since the last call. When more were timed than the
        sample keeps (``Sample.observations``), those kept go out with the rate they stand for,
        so StatsD still counts every batch."""
        key = (sample.name, sample.labels)
        new = sample.count - int(self._sent.get(key, 0))
        self._sent[key] = sample.count
        if new <= 0:
            return []
        kept = sample.observations[-new:]
        rate = len(kept) / new
        return [self.line(sample, round(seconds * 1000, 3), "ms", rate) for seconds in kept]

    def export(self, job: str, samples: Sequence[Sample], *, final: bool) -> None:
        if self._socket is None:  # resolved once: IPv4 or IPv6, whichever the host has first
            family, _, _, _, self._address = socket.getaddrinfo(self.config.host, self.config.port,
                                                                 type=socket.SOCK_DGRAM)[0]
            self._socket = socket.socket(family, socket.SOCK_DGRAM)
        packet = b""
        for line in self.lines(samples):
            data = line.encode()
            if packet and len(packet) + 1 + len(data) > MAX_PACKET:
                self._socket.sendto(packet, self._address)
                packet = b""
            packet = packet + b"\n" + data if packet else data
        if packet:
            self._socket.sendto(packet, self._address)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
