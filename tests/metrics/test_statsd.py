"""The statsd exporter: StatsD lines received on a real UDP socket."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from sluice.exporting import Sample
from sluice.testing import run_job
from sluice_metrics.statsd import StatsdConfig, StatsdExporter

from .helpers import datagrams, job


def parse(lines: list[str]) -> tuple[Counter[str], dict[str, float], dict[str, list[float]]]:
    """Counter increments summed per name (with tags), the last value of each gauge, and the
    timings of each timer (in ms)."""
    counters: Counter[str] = Counter()
    gauges: dict[str, float] = {}
    timings: dict[str, list[float]] = {}
    for line in lines:
        name, rest = line.split(":", 1)
        number, kind, *tags = rest.split("|")
        key = f"{name}|{tags[0]}" if tags else name
        if kind == "c":
            counters[key] += int(number)
        elif kind == "ms":
            assert not tags or tags[0].startswith("#"), f"{line}: a timing of every batch, not a sample"
            timings.setdefault(key, []).append(float(number))
        else:
            assert kind == "g", line
            gauges[key] = float(number)
    return counters, gauges, timings


def test_statsd_lines_reach_a_udp_socket_with_the_exact_counts(statsd: socket.socket) -> None:
    port = statsd.getsockname()[1]
    summary = run_job(job("nightly", metrics={"statsd": {"port": port, "flush_every_s": 0}}))
    assert summary.status == "succeeded"

    counters, gauges, timings = parse(datagrams(statsd))
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
    # one timing per batch and stage (two partitions of ten batches), in milliseconds
    assert {name: len(ms) for name, ms in timings.items()} == {
        "sluice.nightly.batch.source": 20, "sluice.nightly.batch.transform": 20, "sluice.nightly.batch.sink": 20}
    assert sum(timings["sluice.nightly.batch.sink"]) == pytest.approx(summary.batch_seconds["sink"].sum * 1000,
                                                                      abs=0.1)


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
    counters, gauges, timings = parse(lines)
    assert counters[read] == 200
    # timings went out while the run lasted, each batch once: the sends add up to every batch
    assert len(timings["etl.batch|#env:test,job:tagged,stage:source"]) == 20
    assert min(timings["etl.batch|#env:test,job:tagged,stage:source"]) >= 20  # each batch slept 20 ms
    assert counters["etl.records|#env:test,job:tagged,stage:sink,outcome:written"] == 154
    assert counters["etl.records|#env:test,job:tagged,stage:steps[1]:reject_every,outcome:dead"] == 26
    assert gauges["etl.run_status|#env:test,job:tagged"] == 1


def test_more_batches_than_a_sample_keeps_go_out_as_timings_with_their_rate() -> None:
    exporter = StatsdExporter(StatsdConfig(prefix="s"))
    observed = Sample("sluice_batch_seconds", 12.0, (("job", "j"), ("stage", "sink")), "histogram",
                      ((1.0, 6), (float("inf"), 8)), (0.5, 1.5, 2.5, 3.5))  # 8 timed, the latest 4 kept
    assert exporter.lines([observed]) == ["s.j.batch.sink:500|ms|@0.5", "s.j.batch.sink:1500|ms|@0.5",
                                          "s.j.batch.sink:2500|ms|@0.5", "s.j.batch.sink:3500|ms|@0.5"]
    later = Sample("sluice_batch_seconds", 13.0, observed.labels, "histogram", ((1.0, 6), (float("inf"), 9)),
                   (0.5, 1.5, 2.5, 3.5, 1.0))
    assert exporter.lines([later]) == ["s.j.batch.sink:1000|ms"]  # only the batch timed since
    assert exporter.lines([later]) == []
