"""Staged runs (what Airflow runs): plan, extract, loads in several processes, finalize; then one
load cleared and re-run alone, and a plan re-run alone. Every mode ends with exactly the rows of
one plain run, and plan never removes published rows."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from sluice import stages
from sluice.templating import Interval

from .helpers import Db, job, write_jsonl

DAY = Interval.for_day("2024-01-01")
RECORDS = [{"id": i, "at": f"2024-01-01T{i % 24:02d}:00:00Z", "v": i} for i in range(60)]


def staged_job(pg: Db, tmp_path: Path, mode: str, **sink: Any) -> dict[str, Any]:
    pg.sql("CREATE TABLE facts (id integer PRIMARY KEY, at timestamptz NOT NULL, v integer)")
    pg.sql("INSERT INTO facts VALUES (1000, '2023-12-31 12:00Z', -1), (1001, '2024-01-01 12:00Z', -2)")
    for f in range(3):
        write_jsonl(tmp_path / "in" / f"part-{f}.jsonl", RECORDS[f::3])
    extra = {"key": ["id"]} if mode == "upsert" else {"time_column": "at"} if mode == "replace_interval" else {}
    spec = job(f"staged_{mode}", {"type": "jsonl", "path": str(tmp_path / "in")},
               pg.sink("facts", mode=mode, **extra, **sink),
               staging={"uri": str(tmp_path / "staging"), "transform": "with_extract"},
               dead_letter={"type": "jsonl", "path": str(tmp_path / "dead")})
    if mode == "append":
        pg.sql("DELETE FROM facts WHERE id = 1001")  # append adds to the interval rather than replace it
    return spec


def expected(mode: str) -> list[tuple[int, int]]:
    kept = [(1000, -1)] if mode == "replace_interval" else [(1000, -1)] + ([(1001, -2)] if mode == "upsert" else [])
    return sorted([*kept, *[(r["id"], r["v"]) for r in RECORDS]])


def load_step(spec: dict[str, Any], partition: str) -> dict[str, Any]:
    return stages.load(spec, DAY, partition)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["append", "upsert", "replace_interval"])
def test_loads_in_several_processes_then_one_load_and_the_plan_re_run_alone_leave_one_runs_rows(
        pg: Db, tmp_path: Path, mode: str) -> None:
    spec = staged_job(pg, tmp_path, mode)
    keys = stages.plan(spec, DAY)["partitions"]
    for key in keys:
        stages.extract(spec, DAY, key)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.starmap(load_step, [(spec, key) for key in keys])
    if mode == "replace_interval":  # nothing is visible before finalize
        assert pg.sql("SELECT count(*) FROM facts") == [(2,)]
    assert stages.finalize(spec, DAY)["status"] == "succeeded"
    rows = sorted(pg.sql("SELECT id, v FROM facts"))
    assert rows == expected(mode)

    stages.plan(spec, DAY)  # an operator clears the plan: published rows stay
    assert sorted(pg.sql("SELECT id, v FROM facts")) == rows
    stages.load(spec, DAY, keys[1])  # ... and one load, then finalize
    assert stages.finalize(spec, DAY)["status"] == "succeeded"
    assert sorted(pg.sql("SELECT id, v FROM facts")) == rows


def test_a_load_re_run_after_the_stage_table_was_dropped_asks_for_the_whole_interval(pg: Db, tmp_path: Path) -> None:
    spec = staged_job(pg, tmp_path, "replace_interval", stage_retention=0)
    keys = stages.plan(spec, DAY)["partitions"]
    for key in keys:
        stages.extract(spec, DAY, key)
    for key in keys:
        stages.load(spec, DAY, key)
    stages.finalize(spec, DAY)
    rows = sorted(pg.sql("SELECT id, v FROM facts"))
    assert rows == expected("replace_interval")
    assert pg.sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sluice_stage_%'") == [(0,)]
    with pytest.raises(Exception, match=r"stage table .* is gone .* run the whole interval again"):
        stages.load(spec, DAY, keys[0])
    assert sorted(pg.sql("SELECT id, v FROM facts")) == rows


def test_a_committed_stage_table_is_kept_for_its_retention_and_dropped_by_a_later_commit(
        pg: Db, tmp_path: Path) -> None:
    spec = staged_job(pg, tmp_path, "replace_interval")
    summary = stages.run_staged(stages.StagedRun.open(spec, DAY).job)
    assert summary.status == "succeeded"
    assert pg.sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sluice_stage_%'") == [(1,)]
    spec["destination"]["stage_retention"] = 0  # another run of the job, with no retention: both are dropped
    assert stages.run_staged(stages.StagedRun.open(spec, DAY, run_id="again").job).status == "succeeded"
    assert pg.sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sluice_stage_%'") == [(0,)]
    assert pg.sql("SELECT count(*) FROM sluice_checkpoints") == [(0,)]
