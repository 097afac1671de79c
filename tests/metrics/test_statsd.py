"""The statsd exporter: StatsD lines received on a real UDP socket."""

from __future__ import annotations

import socket
from collections import Counter

from sluice.testing import run_job

from .helpers import datagrams, job


def parse(lines: list[str]) -> tuple[Counter[str], dict[str, float]]:
    """Counter increments summed per name (with tags), and the last value of each gauge."""
    counters: Counter[str] = Counter()
    gauges: dict[str, float] = {}
    for line in lines:
        name, rest = line.split(":", 1)
        number, kind, *tags = rest.split("|")
        key = f"{name}|{tags[0]}" if tags else name
        if kind == "c":
            counters[key] += int(number)
        else:
            assert kind == "g", line
            gauges[key] = float(number)
    return counters, gauges


def test_statsd_lines_reach_a_udp_socket_with_the_exact_counts(statsd: socket.socket) -> None:
    port = statsd.getsockname()[1]
    summary = run_job(job("nightly", metrics={"statsd": {"port": port, "flush_every_s": 0}}))
    assert summary.status == "succeeded"

    counters, gauges = parse(datagrams(statsd))
    assert counters == {
        "sluice.nightly.records.source.read": 200,
        "sluice.nightly.records.sink.written": 154,
        "sluice.nightly.records.steps_0_drop_every.filtered": 20,
        "sluice.nightly.records.steps_1_reject_every.dead": 26,
    }
    assert gauges["sluice.nightly.run_status"] == 1
    assert gauges["sluice.nightly.partitions.total"] == gauges["sluice.nightly.partitions.done"] == 2
    assert gauges["sluice.nightly.run_duration_seconds"] > 0
    assert "sluice.nightly.run_last_success_timestamp_seconds" in gauges


def test_dogstatsd_tags_and_periodic_sends_add_up_to_the_run_totals(statsd: socket.socket) -> None:
    port = statsd.getsockname()[1]
    metrics = {"statsd": {"port": port, "tags": True, "flush_every_s": 0.05, "constant_tags": {"env": "test"},
                          "prefix": "etl"}}
    summary = run_job(job("tagged", source={"delay_s": 0.02}, metrics=metrics))
    assert summary.status == "succeeded"

    lines = datagrams(statsd)
    read = "etl.records|#env:test,job:tagged,stage:source,outcome:read"
    assert sum(1 for line in lines if line.startswith("etl.records:") and line.endswith("stage:source,outcome:read")) \
        >= 3, "the counts went out in several sends while the run lasted"
    counters, gauges = parse(lines)
    assert counters[read] == 200
    assert counters["etl.records|#env:test,job:tagged,stage:sink,outcome:written"] == 154
    assert counters["etl.records|#env:test,job:tagged,stage:steps[1]:reject_every,outcome:dead"] == 26
    assert gauges["etl.run_status|#env:test,job:tagged"] == 1
