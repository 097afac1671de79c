"""The run history: every run records itself, with exact counts, in SQLite and in PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sluice import JobFailed
from sluice.history import LATEST, MIGRATIONS, HistoryError, HistoryStore, PartitionRecord, RunRecord, migrate
from sluice.stages import StagedRun, run_staged
from sluice.templating import Interval
from sluice.testing import load_test_job, run_job

from .helpers import DEAD, FILTERED, expected, job

DAY = Interval.for_day("2024-01-01")


def counts(run: RunRecord) -> dict[str, int]:
    return {"read": run.read, "filtered": run.filtered, "dead": run.dead_lettered, "written": run.written}


def test_succeeded_failed_and_resumed_runs_are_recorded_with_their_exact_counts(history_url: str) -> None:
    assert run_job(job("ok_job")).status == "succeeded"
    failing = job("resumable", source={"fail_partition": "p1", "fail_at": 50})
    assert run_job(failing).status == "failed"
    assert run_job(job("resumable"), resume=True).status == "succeeded"

    with HistoryStore(history_url) as store:
        ok = store.last("ok_job")
        assert ok is not None and (ok.status, ok.attempt, ok.kind, ok.resumed) == ("succeeded", 1, "run", False)
        assert counts(ok) == {"read": 200, "filtered": 20, "dead": 26, "written": 154}
        assert ok.filtered_by == {FILTERED: 20} and ok.dead_lettered_by == {DEAD: 26}
        assert (ok.partitions, ok.partitions_done, ok.error) == (2, 2, None)
        assert ok.interval_start == DAY.start and ok.interval_end == DAY.end
        assert ok.dead_letters == "dead" and ok.destination == "out" and ok.sluice_version and ok.host

        resumed, failed = store.attempts("resumable-20240101T000000-20240102T000000")
        # the first attempt read p0 and p1 up to n=50; the resumed one read p1 from its checkpoint
        assert (failed.attempt, failed.status, failed.resumed) == (1, "failed", False)
        assert counts(failed) == {k: expected(range(100))[k] + expected(range(50))[k] for k in counts(failed)}
        assert "source broke in p1 at n=50" in (failed.error or "")
        assert (resumed.attempt, resumed.status, resumed.resumed) == (2, "succeeded", True)
        assert counts(resumed) == expected(range(50, 100))

        parts = {p.key: p for p in store.partitions(failed)}
        assert parts["p0"].status == "done"
        assert (parts["p1"].status, parts["p1"].checkpoint) == ("failed", 50)
        assert "source broke in p1 at n=50" in (parts["p1"].error or "")
        assert [p.status for p in store.partitions(resumed)] == ["done", "done"]


def partition_counts(p: PartitionRecord) -> dict[str, int | None]:
    return {"read": p.read, "filtered": p.filtered, "dead": p.dead_lettered, "written": p.written}


def test_a_plain_run_records_each_partitions_counts_and_time(history_url: str) -> None:
    assert run_job(job("plain_parts", source={"fail_partition": "p1", "fail_at": 50})).status == "failed"
    assert run_job(job("plain_parts"), resume=True).status == "succeeded"

    with HistoryStore(history_url) as store:
        resumed, failed = store.attempts("plain_parts-20240101T000000-20240102T000000")
        p0, p1 = store.partitions(failed)
        assert (p0.status, partition_counts(p0)) == ("done", expected(range(100)))
        assert (p1.status, partition_counts(p1)) == ("failed", expected(range(50)))
        assert all(p.duration_s and p.records_per_s for p in (p0, p1))
        # the resumed attempt did p1's second half; p0 was done by the first attempt: no counts
        p0, p1 = store.partitions(resumed)
        assert (p0.status, partition_counts(p0), p0.duration_s) == \
            ("done", {"read": None, "filtered": None, "dead": None, "written": None}, None)
        assert (p1.status, partition_counts(p1)) == ("done", expected(range(50, 100)))


def test_a_staged_run_records_each_partition_from_the_step_manifests(history_url: str) -> None:
    loaded = load_test_job(job("staged_hist", staging={"uri": "staging"}))
    assert run_staged(loaded).status == "succeeded"

    with HistoryStore(history_url) as store:
        run = store.last("staged_hist")
        assert run is not None and (run.kind, run.status, run.finalized) == ("staged", "succeeded", True)
        assert counts(run) == {"read": 200, "filtered": 20, "dead": 26, "written": 154}
        assert run.duration_s and run.started_at is None  # no `sluice run` saw it start: the steps' time added up
        partitions = store.partitions(run)
        per = expected(range(100))
        assert [(p.key, p.status, p.read, p.filtered, p.dead_lettered, p.written) for p in partitions] == [
            ("p0", "done", 100, per["filtered"], per["dead"], per["written"]),
            ("p1", "done", 100, per["filtered"], per["dead"], per["written"]),
        ]
        assert all(p.duration_s and p.records_per_s for p in partitions)


def test_a_failed_step_marks_the_run_failed_until_its_finalize_records_it(history_url: str) -> None:
    """Steps run one by one, as an orchestrator runs them: extract of p1 fails, is re-run, and the
    same attempt of the run ends succeeded."""
    broken = job("orchestrated", source={"fail_partition": "p1", "fail_at": 30}, staging={"uri": "staging"})
    with StagedRun.open(broken, DAY, owner="dag-run-1") as run:
        keys = run.plan()["partitions"]
        run.extract("p0")
        with pytest.raises(JobFailed):
            run.extract("p1")

    with HistoryStore(history_url) as store:
        failed = store.last("orchestrated")
        assert failed is not None and (failed.status, failed.finalized, failed.attempt) == ("failed", False, 1)
        assert (failed.error or "").startswith("extract: ") and "source broke in p1 at n=30" in failed.error
        [p1] = store.partitions(failed)
        assert (p1.key, p1.status, p1.checkpoint) == ("p1", "failed", 30)

    with StagedRun.open(job("orchestrated", staging={"uri": "staging"}), DAY, owner="dag-run-1") as run:
        run.extract("p1")  # the orchestrator retries the task
        for key in keys:
            run.transform(key)
        for key in keys:
            run.load(key)
        run.finalize()

    with HistoryStore(history_url) as store:
        [done] = store.attempts("orchestrated-20240101T000000-20240102T000000")
        assert (done.status, done.finalized, done.attempt, done.error) == ("succeeded", True, 1, None)
        assert counts(done) == {"read": 200, "filtered": 20, "dead": 26, "written": 154}
        assert [(p.key, p.status, p.read) for p in store.partitions(done)] == [("p0", "done", 100), ("p1", "done", 100)]


def test_a_staged_run_that_fails_its_error_rate_at_finalize_is_recorded_failed(history_url: str) -> None:
    strict = job("strict_staged", runtime={"error_rate_threshold": 0.01}, staging={"uri": "staging", "mode": "fused"})
    with pytest.raises(JobFailed, match="error rate"):
        run_staged(load_test_job(strict))
    with HistoryStore(history_url) as store:
        run = store.last("strict_staged")
        assert run is not None and (run.status, run.finalized) == ("failed", True)
        assert "error rate 13.00%" in (run.error or "")
        assert counts(run) == {"read": 200, "filtered": 20, "dead": 26, "written": 154}


def test_migrations_are_versioned_applied_once_and_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with HistoryStore(str(path)) as store:  # a store created by a Sluice that knew only migration 1
        store.db.execute("DROP TABLE sluice_partitions")
        store.db.execute("DROP TABLE sluice_runs")
        store.db.execute("DELETE FROM sluice_history_version")
        migrate(store.db, upto=1)

    def versions() -> list[int]:
        return [r[0] for r in sqlite3.connect(path).execute("SELECT version FROM sluice_history_version ORDER BY 1")]

    def indexes() -> set[str]:
        return {r[0] for r in sqlite3.connect(path).execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'sluice_runs_%'")}

    assert versions() == [1] and not indexes()

    HistoryStore(str(path)).close()
    HistoryStore(str(path)).close()
    assert versions() == [v for v, _, _ in MIGRATIONS] == list(range(1, LATEST + 1))
    assert indexes() == {"sluice_runs_job_finished", "sluice_runs_finished", "sluice_runs_run_id"}

    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO sluice_history_version VALUES (?, 'from the future', '')", (LATEST + 1,))
    with pytest.raises(HistoryError, match=f"schema version {LATEST + 1}, newer than this Sluice knows"):
        HistoryStore(str(path))


def test_a_history_that_cannot_be_written_does_not_fail_the_run(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("SLUICE_HISTORY", str(tmp_path / "a_file" / "history.db"))
    with capture_logs() as logs:
        summary = run_job(job("unrecorded"))
    assert summary.status == "succeeded" and summary.written == 154
    [warning] = [e for e in logs if e["event"] == "the run was not recorded in the history"]
    assert warning["log_level"] == "warning" and "a_file" in warning["error"]


def test_history_can_be_turned_off(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("SLUICE_HISTORY", "off")
    assert run_job(job("off_job")).status == "succeeded"
    assert not (tmp_path / ".sluice" / "history.db").exists()
    monkeypatch.delenv("SLUICE_HISTORY")
    assert run_job(job("on_job")).status == "succeeded"
    assert (tmp_path / ".sluice" / "history.db").exists()
