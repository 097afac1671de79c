"""The prometheus exporter against a real Pushgateway, a /metrics server during a run, and a textfile."""

from __future__ import annotations

import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from sluice import cli, observe
from sluice.stages import run_staged
from sluice.testing import load_test_job, run_job

from .helpers import DEAD, FILTERED, expected, free_port, job, scrape, value

TOTAL = expected(range(100))  # per partition; two partitions


def test_a_run_pushes_its_exact_counts_to_the_pushgateway(pushgateway: str) -> None:
    before = time.time()
    summary = run_job(job("pushed", metrics={"prometheus": {"pushgateway": pushgateway}}))
    assert summary.status == "succeeded", summary.error

    got = scrape(f"{pushgateway}/metrics")
    records = "sluice_records_total"
    assert value(got, records, job="pushed", stage="source", outcome="read") == 200
    assert value(got, records, job="pushed", stage="sink", outcome="written") == 2 * TOTAL["written"] == 154
    assert value(got, records, job="pushed", stage=FILTERED, outcome="filtered") == 2 * TOTAL["filtered"] == 20
    assert value(got, records, job="pushed", stage=DEAD, outcome="dead") == 2 * TOTAL["dead"] == 26
    for component in ("source", "transform", "destination", "dead_letter", "checkpoints"):
        assert value(got, "sluice_retries_total", job="pushed", component=component) == 0
    for stage in ("source", "transform", "sink"):  # two partitions of ten batches
        assert value(got, "sluice_batch_seconds_count", job="pushed", stage=stage) == 20
        assert value(got, "sluice_batch_seconds_bucket", job="pushed", stage=stage, le="+Inf") == 20
        assert 0 < value(got, "sluice_batch_seconds_sum", job="pushed", stage=stage) < summary.duration_s  # type: ignore[operator]
    buckets = sorted((float(dict(labels)["le"]), n) for (name, labels), n in got.items()
                     if name == "sluice_batch_seconds_bucket" and ("stage", "sink") in labels)
    assert len(buckets) == 16 and [n for _, n in buckets] == sorted(n for _, n in buckets), buckets  # cumulative
    assert value(got, "sluice_run_status", job="pushed") == 1
    assert before <= value(got, "sluice_run_last_success_timestamp_seconds", job="pushed") <= time.time()  # type: ignore[operator]
    assert value(got, "sluice_run_duration_seconds", job="pushed") == pytest.approx(summary.duration_s, abs=0.05)
    assert [value(got, "sluice_partitions", job="pushed", state=s) for s in ("total", "done", "failed")] == [2, 2, 0]


def test_runs_of_a_job_replace_each_other_and_a_failed_run_keeps_the_last_success(pushgateway: str) -> None:
    metrics = {"prometheus": {"pushgateway": pushgateway}}
    assert run_job(job("daily", metrics=metrics), ds="2024-01-01").status == "succeeded"
    success = value(scrape(f"{pushgateway}/metrics"), "sluice_run_last_success_timestamp_seconds", job="daily")

    failed = run_job(job("daily", metrics=metrics, source={"fail_partition": "p1", "fail_at": 50}), ds="2024-01-02")
    assert failed.status == "failed"

    got = scrape(f"{pushgateway}/metrics")
    # the second run's counts replaced the first's (one group per job): p0 and half of p1 were read
    assert value(got, "sluice_records_total", job="daily", stage="source", outcome="read") == 150
    assert value(got, "sluice_records_total", job="daily", stage="sink", outcome="written") == \
        TOTAL["written"] + expected(range(50))["written"]
    assert value(got, "sluice_run_status", job="daily") == 0
    assert value(got, "sluice_run_last_success_timestamp_seconds", job="daily") == success
    assert [value(got, "sluice_partitions", job="daily", state=s) for s in ("total", "done", "failed")] == [2, 1, 1]
    assert len({dict(labels).get("job") for _, labels in got}) == 1


def test_a_long_run_pushes_every_n_seconds_while_it_lasts(pushgateway: str) -> None:
    slow = job("pushing", source={"delay_s": 0.03}, metrics={"prometheus": {"pushgateway": pushgateway,
                                                                            "push_every_s": 0.1}})
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            read = value(scrape(f"{pushgateway}/metrics"), "sluice_records_total", job="pushing", stage="source",
                         outcome="read")
            if read is not None:
                seen.append(read)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = run_job(slow)
    finally:
        done.set()
        watcher.join()
    assert summary.status == "succeeded"
    partial = sorted({n for n in seen if n < 200})
    assert len(partial) >= 3, f"pushes seen during the run: {seen}"
    assert value(scrape(f"{pushgateway}/metrics"), "sluice_records_total", job="pushing", stage="source",
                 outcome="read") == 200


def test_metrics_port_serves_counts_that_rise_while_a_long_run_lasts(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    path = tmp_path / "slow.json"
    path.write_bytes(orjson.dumps(job("served", source={"delay_s": 0.04})))
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.update(code=cli.main(
        ["run", str(path), "--ds", "2024-01-01", "--metrics-port", str(port)])))
    runner.start()
    reads: list[float] = []
    while runner.is_alive():
        try:
            read = value(scrape(f"http://127.0.0.1:{port}/metrics", timeout=1), "sluice_records_total",
                         job="served", stage="source", outcome="read")
        except OSError:
            read = None  # not serving yet, or no longer
        if read is not None:
            reads.append(read)
        time.sleep(0.05)
    runner.join()

    assert result["code"] == 0
    summary = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["read"] == 200
    rising = sorted(set(reads))
    assert len(rising) >= 4 and rising[0] < 100 and rising == sorted(rising), f"scraped: {reads}"
    assert reads == sorted(reads), "a counter went down during the run"
    with pytest.raises(urllib.error.URLError):  # served while the run lasts, not after
        scrape(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_a_staged_run_exports_the_whole_runs_counts_once(pushgateway: str) -> None:
    loaded = load_test_job(job("staged_push", metrics={"prometheus": {"pushgateway": pushgateway}},
                               staging={"uri": "staging"}))
    session = observe.watch(loaded)
    summary = run_staged(loaded)
    assert summary.status == "succeeded", summary.error
    # what /metrics and the periodic pushes showed while it ran: the steps added up as the summary does
    live = session.counts()
    assert (live["read"], live["written"], live["filtered"], live["dead_lettered"]) == \
        (200, 154, {FILTERED: 20}, {DEAD: 26})

    got = scrape(f"{pushgateway}/metrics")
    # what a plain run of the job counts, though every record was read and written twice (via staging)
    assert value(got, "sluice_records_total", job="staged_push", stage="source", outcome="read") == 200
    assert value(got, "sluice_records_total", job="staged_push", stage="sink", outcome="written") == 154
    assert value(got, "sluice_records_total", job="staged_push", stage=DEAD, outcome="dead") == 26
    assert value(got, "sluice_run_status", job="staged_push") == 1
    # batches timed by the steps that read the source (extract) and wrote the destination (load)
    assert value(got, "sluice_batch_seconds_count", job="staged_push", stage="source") == 20
    assert value(got, "sluice_batch_seconds_count", job="staged_push", stage="sink") == \
        live["batch_seconds"]["sink"].count > 0


def test_a_gateway_that_is_down_is_logged_once_and_the_run_succeeds() -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    slow = job("unpushed", source={"delay_s": 0.02}, metrics={"prometheus": {"pushgateway": down,
                                                                             "push_every_s": 0.05}})
    with capture_logs() as logs:
        summary = run_job(slow)
    assert summary.status == "succeeded" and summary.written == 154
    warnings = [e for e in logs if e.get("exporter") == "prometheus"]
    assert len(warnings) == 1, logs
    assert warnings[0]["log_level"] == "warning" and "Connection refused" in warnings[0]["error"]


def test_the_textfile_holds_the_run_and_a_failed_run_keeps_the_last_success(tmp_path: Path) -> None:
    metrics = {"prometheus": {"textfile_dir": str(tmp_path / "textfile")}}
    assert run_job(job("texty", metrics=metrics)).status == "succeeded"
    path = tmp_path / "textfile" / "sluice_texty.prom"
    got = scrape(path.as_uri())
    assert value(got, "sluice_records_total", job="texty", stage="sink", outcome="written") == 154
    success = value(got, "sluice_run_last_success_timestamp_seconds", job="texty")
    assert success is not None and value(got, "sluice_run_status", job="texty") == 1

    assert run_job(job("texty", metrics=metrics, source={"fail_partition": "p0", "fail_at": 0})).status == "failed"
    assert value(got, "sluice_batch_seconds_count", job="texty", stage="sink") == 20
    got = scrape(path.as_uri())
    assert value(got, "sluice_run_status", job="texty") == 0
    assert value(got, "sluice_records_total", job="texty", stage="source", outcome="read") == 0
    assert value(got, "sluice_batch_seconds_count", job="texty", stage="sink") == 0  # this run's, not the last
    assert value(got, "sluice_run_last_success_timestamp_seconds", job="texty") == success
    assert not list(path.parent.glob("*.tmp*"))  # written atomically
