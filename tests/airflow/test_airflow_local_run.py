"""End to end with local files: jsonl source → staging → filter, cast → jsonl destination."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from af_helpers import day, run_interval, states, tree, write_lines, xcom, xcoms

from sluice.testing import read_jsonl


def events(ds: str, n: int, bad: set[int] = frozenset()) -> list[dict]:
    """``n`` events of day ``ds``; ``v`` is a number as text, not a number for the indices in ``bad``."""
    return [{"id": f"{ds}-{i}", "n": i, "v": "oops" if i in bad else str(i * 2)} for i in range(n)]


def seed(data: Path, ds: str, records: list[dict], files: int = 3) -> None:
    """Spread ``records`` over ``files`` files: the jsonl source makes one partition per file."""
    for f in range(files):
        write_lines(data / f"date={ds}" / f"events-{f}.jsonl", records[f::files])


def expected(records: list[dict]) -> list[dict]:
    return sorted(({**r, "v": int(r["v"])} for r in records if r["n"] % 10 != 0 and r["v"] != "oops"),
                  key=lambda r: r["id"])


def test_a_run_moves_every_record_through_the_stages(get_dag, local_env):
    records = events("2024-01-02", 300)
    seed(local_env["TEST_DATA"], "2024-01-02", records)
    dr = run_interval(get_dag("local_daily"), day("2024-01-02"))
    assert dr.state == "success", states(dr)
    st = states(dr)
    assert sorted(k for k in st if k[0] == "extract") == [("extract", 0), ("extract", 1), ("extract", 2)]
    assert sorted(k for k in st if k[0] == "transform") == [("transform", 0), ("transform", 1), ("transform", 2)]
    labels = {ti.rendered_map_index for ti in dr.get_task_instances() if ti.task_id == "extract"}
    assert labels == {f"events-{f}.jsonl" for f in range(3)}  # mapped tasks are labelled by partition
    out = local_env["TEST_OUT"] / "date=2024-01-02"
    assert sorted(read_jsonl(out), key=lambda r: r["id"]) == expected(records)
    assert (out / "_SUCCESS").exists()
    # staging hands the source partitions on: output files are named as `sluice run` names them
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-events-{f}.jsonl-00000.jsonl" for f in range(3)]
    report = xcom(dr, "finalize")
    assert report["read"] == 300 and report["filtered_total"] == 30 and report["written"] == 270
    assert report["dead_lettered_total"] == 0 and report["reconciled"]
    assert [s for s in report["stages"]] == ["extract", "transform", "load"]
    # staging is kept for staging.retention, so a task cleared in the meantime finds what it needs
    staged = local_env["TEST_STAGING"] / "local_daily"
    assert (staged / "20240102T000000-20240103T000000" / "plan.json").exists()
    assert (staged / "_runs" / "20240102T000000-20240103T000000.json").exists()


def test_xcom_holds_only_small_manifests(get_dag, local_env):
    seed(local_env["TEST_DATA"], "2024-01-02", events("2024-01-02", 600))
    dr = run_interval(get_dag("local_daily"), day("2024-01-02"))
    assert dr.state == "success", states(dr)
    values = xcoms(dr)
    assert {t for t, _, _ in values} == {"plan", "extract", "transform", "load", "finalize"}
    for task_id, map_index, value in values:
        size = len(orjson.dumps(value, default=str))
        assert size < 4096, (task_id, map_index, size)
        assert "oops" not in str(value) and "2024-01-02-1\"" not in str(value)  # no records


def test_a_run_over_the_error_threshold_loads_nothing_and_keeps_its_dead_letters(get_dag, local_env):
    records = events("2024-01-03", 200, bad=set(range(1, 200, 9)))  # ~10% not castable; threshold is 5%
    seed(local_env["TEST_DATA"], "2024-01-03", records)
    dr = run_interval(get_dag("local_daily"), day("2024-01-03"))
    assert dr.state == "failed"
    st = states(dr)
    assert {st[k] for k in st if k[0] == "load"} == {"failed"}  # the transforms were already over it
    assert st[("finalize", -1)] == "upstream_failed"
    out = local_env["TEST_OUT"] / "date=2024-01-03"
    assert not out.exists()  # nothing was written to the destination
    dead = read_jsonl(local_env["TEST_OUT"] / "dead_letters" / "date=2024-01-03")
    bad = sorted(r["id"] for r in records if r["v"] == "oops" and r["n"] % 10 != 0)
    assert sorted(d["record"]["id"] for d in dead) == bad
    assert {d["stage"] for d in dead} == {"transform"}
    assert all(d["run_id"] == "local_daily-20240103T000000-20240104T000000" for d in dead)


def test_the_same_interval_twice_leaves_identical_output(get_dag, local_env):
    seed(local_env["TEST_DATA"], "2024-01-02", events("2024-01-02", 120, bad={7}))
    dag = get_dag("local_daily")
    first = run_interval(dag, day("2024-01-02"))
    assert first.state == "success", states(first)
    before = tree(local_env["TEST_OUT"])
    second = run_interval(dag, day("2024-01-02"))
    assert second.state == "success", states(second)
    after = tree(local_env["TEST_OUT"])
    assert after.keys() == before.keys()
    changed = [k for k in before if before[k] != after[k] and "dead_letters" not in k]
    assert changed == []
    # dead letters are rewritten, not added: same records (only their timestamps differ)
    dead = read_jsonl(local_env["TEST_OUT"] / "dead_letters" / "date=2024-01-02")
    assert [d["record"]["id"] for d in dead] == ["2024-01-02-7"]


def test_consecutive_intervals_write_separate_partitions(get_dag, local_env):
    dag = get_dag("local_daily")
    for ds in ("2024-01-05", "2024-01-06"):
        seed(local_env["TEST_DATA"], ds, events(ds, 50))
    runs = [run_interval(dag, day(ds)) for ds in ("2024-01-05", "2024-01-06")]
    assert [r.state for r in runs] == ["success", "success"]
    for ds in ("2024-01-05", "2024-01-06"):
        got = read_jsonl(local_env["TEST_OUT"] / f"date={ds}")
        assert sorted(got, key=lambda r: r["id"]) == expected(events(ds, 50))


@pytest.mark.parametrize("n", [0])
def test_an_interval_without_input_still_commits(get_dag, local_env, n):
    (local_env["TEST_DATA"] / "date=2024-01-09").mkdir()
    dr = run_interval(get_dag("local_daily"), day("2024-01-09"))
    assert dr.state == "success", states(dr)
    assert (local_env["TEST_OUT"] / "date=2024-01-09" / "_SUCCESS").exists()
    assert xcom(dr, "finalize")["read"] == n


def test_a_run_wide_aggregate_sees_every_partition_in_one_transform_task(get_dag, local_env):
    records = [{"app": ("web", "api")[i % 2], "n": i} for i in range(30)]
    seed(local_env["TEST_DATA"], "2023-12-31", records)  # a Sunday; three files: three extract tasks
    dr = run_interval(get_dag("rollup"), day("2023-12-31"), timedelta(days=7))
    assert dr.state == "success", states(dr)
    assert sorted(k for k in states(dr) if k[0] in ("extract", "transform")) == [
        ("extract", 0), ("extract", 1), ("extract", 2), ("transform", -1)]
    got = read_jsonl(local_env["TEST_OUT"] / "rollup" / "date=2023-12-31")
    assert sorted(got, key=lambda r: r["app"]) == [{"app": "api", "docs": 15}, {"app": "web", "docs": 15}]
    report = xcom(dr, "finalize")
    assert (report["read"], report["filtered_total"], report["created"], report["written"]) == (30, 30, 2, 2)


def test_a_scheduled_job_logs_its_interval_and_warns_that_a_conf_ds_is_ignored(get_dag, local_env, caplog):
    import logging

    seed(local_env["TEST_DATA"], "2024-01-02", events("2024-01-02", 30))
    end = day("2024-01-03")
    with caplog.at_level(logging.INFO, logger="sluice_airflow"):
        dr = get_dag("local_daily").test(logical_date=end, run_after=end, run_conf={"ds": "2024-01-20"})
    assert dr.state == "success", states(dr)
    messages = [r.getMessage() for r in caplog.records if r.name == "sluice_airflow"]
    assert any("conf {'ds': '2024-01-20'} is ignored" in m and "2024-01-02T00:00:00+00:00" in m for m in messages)
    assert any(f"run {dr.run_id} processes the interval 2024-01-02T00:00:00+00:00 to 2024-01-03T00:00:00+00:00" in m
               for m in messages)
