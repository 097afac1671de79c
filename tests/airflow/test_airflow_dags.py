"""The DAGs the factory builds: tasks, mapping, schedule, and broken job files."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from af_helpers import states

from conftest import JOBS_DIR, REPO

STAGES = {"plan": ["extract", "load", "transform"], "extract": ["transform"], "transform": ["load"],
          "load": ["finalize"], "finalize": []}


def test_tasks_run_plan_extract_transform_load_finalize(dagbag):
    dag = dagbag.get_dag("local_daily")
    assert {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} == STAGES


def test_extract_transform_and_load_fan_out_per_partition(dagbag):
    dag = dagbag.get_dag("local_daily")
    assert dag.get_task("extract").is_mapped
    assert dag.get_task("transform").is_mapped
    assert dag.get_task("load").is_mapped and not dag.get_task("finalize").is_mapped


def test_a_transform_with_run_wide_state_runs_as_one_task(dagbag):
    dag = dagbag.get_dag("rollup")
    assert dag.get_task("extract").is_mapped and dag.get_task("load").is_mapped
    assert not dag.get_task("transform").is_mapped
    assert {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} == {
        "plan": ["extract", "transform"], "extract": ["transform"], "transform": ["load"], "load": ["finalize"],
        "finalize": []}


def test_a_job_without_steps_has_no_transform_task_and_a_fused_job_runs_each_partition_in_one_task(dagbag):
    assert {t.task_id: sorted(t.downstream_task_ids) for t in dagbag.get_dag("manual").tasks} == {
        "plan": ["extract", "load"], "extract": ["load"], "load": ["finalize"], "finalize": []}
    fused = dagbag.get_dag("s3_to_es_fused")
    assert {t.task_id: sorted(t.downstream_task_ids) for t in fused.tasks} == {
        "plan": ["run"], "run": ["finalize"], "finalize": []}
    assert fused.get_task("run").is_mapped


def test_the_schedule_block_sets_timetable_dates_catchup_retries_and_tags(dagbag):
    dag = dagbag.get_dag("local_daily")
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 0 * * *", "UTC")
    assert dag.start_date == datetime(2024, 1, 1, tzinfo=UTC)
    assert dag.end_date == datetime(2024, 12, 31, tzinfo=UTC)
    assert dag.catchup is True and dag.max_active_runs == 2
    assert set(dag.tags) == {"sluice", "test", "local"}
    assert dag.description == "Local files through the Airflow stages"
    for t in dag.tasks:
        assert (t.retries, t.retry_delay, t.owner) == (3, timedelta(seconds=120), "data-eng")


def test_presets_and_plain_cron_map_to_data_interval_timetables(dagbag):
    assert dagbag.get_dag("es_to_s3").timetable.expression == "0 * * * *"
    assert dagbag.get_dag("rollup").timetable.expression == "0 0 * * 0"
    assert dagbag.get_dag("s3_to_es").timetable.expression == "0 0 * * *"
    assert dagbag.get_dag("s3_to_es").catchup is False
    assert dagbag.get_dag("es_to_s3").get_task("load").retries == 1


def test_a_job_without_schedule_is_a_manual_only_dag(dagbag):
    dag = dagbag.get_dag("manual")
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert dag.get_task("finalize").retries == 0


def test_a_manual_run_takes_its_interval_from_conf(get_dag, local_env):
    from af_helpers import write_lines

    from sluice.testing import read_jsonl

    write_lines(local_env["TEST_DATA"] / "date=2024-02-03" / "a.jsonl", [{"k": 1}, {"k": 2}])
    when = datetime(2024, 3, 1, tzinfo=UTC)
    dr = get_dag("manual").test(logical_date=when, run_after=when, run_conf={"ds": "2024-02-03"})
    assert dr.state == "success", states(dr)
    assert read_jsonl(local_env["TEST_OUT"] / "manual" / "date=2024-02-03") == [{"k": 1}, {"k": 2}]


def test_a_broken_job_file_does_not_hide_the_others_and_is_an_import_error_naming_file_and_fields(dagbag):
    assert {"local_daily", "es_to_s3", "s3_to_es", "s3_to_es_fused", "rollup", "manual"} <= set(dagbag.dag_ids)
    broken = dagbag.get_dag("broken")  # the job keeps its own DAG id
    assert set(broken.tags) == {"sluice", "broken"}
    assert "broken.yaml" in broken.description and "filtr" in broken.description
    assert "pathh" in broken.doc_md and "Did you mean 'filter'" in broken.doc_md
    [(where, error)] = dagbag.import_errors.items()  # where operators look: the import errors
    assert where.endswith("sluice_job_checks.py")
    assert "broken.yaml" in error and "unknown transform type 'filtr'" in error and "pathh" in error


def test_the_broken_dag_fails_with_the_problems(get_dag):
    dr = get_dag("broken").test()
    assert dr.state == "failed"
    assert states(dr) == {("job_file_is_broken", -1): "failed"}


def test_a_typo_in_a_scheduled_job_keeps_its_dag_id_and_schedule_and_fails_its_runs(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    text = (JOBS_DIR / "s3_to_es.yaml").read_text()
    assert "keys_per_partition" in text
    (jobs / "s3_to_es.yaml").write_text(text.replace("keys_per_partition", "keys_per_partiton"))
    monkeypatch.setenv("SLUICE_JOBS_DIR", str(jobs))
    bag = DagBag(dag_folder=str(REPO / "dags"))
    dag = bag.get_dag("s3_to_es")
    assert dag is not None and "broken" in dag.tags
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable" and dag.timetable.expression == "0 0 * * *"
    assert "keys_per_partiton" in dag.description
    [error] = bag.import_errors.values()
    assert "s3_to_es.yaml" in error
    assert "unknown option 'keys_per_partiton'; did you mean 'keys_per_partition'?" in error
    for t in dag.tasks:
        t.retries = 0
    end = datetime(2024, 1, 3, tzinfo=UTC)
    dr = dag.test(logical_date=end, run_after=end)
    assert dr.state == "failed"
    [ti] = dr.get_task_instances()
    assert ti.task_id == "job_file_is_broken" and ti.state == "failed"


def test_parsing_for_one_task_builds_only_that_job(monkeypatch, caplog):
    from sluice_airflow.factory import build_dags

    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "manual")
    with caplog.at_level(logging.ERROR, logger="sluice_airflow"):
        dags = build_dags(JOBS_DIR)
    assert list(dags) == ["manual"]
    assert caplog.records == []  # broken.yaml is not this task's job: nothing about it in its log


def test_a_broken_job_is_logged_in_one_line_naming_file_and_problems(tmp_path, caplog):
    from sluice_airflow.factory import build_dags

    for name in ("broken.yaml", "local_daily.yaml"):
        (tmp_path / name).write_text((JOBS_DIR / name).read_text())
    (tmp_path / "bad_cron.yaml").write_text((JOBS_DIR / "manual.yaml").read_text().replace(
        "job_name: manual", "job_name: bad_cron\nschedule: {cron: 'every tuesday', start_date: 2024-01-01}"))
    (tmp_path / "twin.yaml").write_text((JOBS_DIR / "manual.yaml").read_text())
    (tmp_path / "manual.yaml").write_text((JOBS_DIR / "manual.yaml").read_text())
    (tmp_path / "not_yaml.yml").write_text("job_name: [unclosed\n")
    with caplog.at_level(logging.ERROR, logger="sluice_airflow"):
        dags = build_dags(tmp_path)
    assert sorted(dags) == ["bad_cron", "broken", "local_daily", "manual", "sluice_broken__not_yaml",
                            "sluice_broken__twin"]  # job names kept where the file still names its job
    lines = {r.getMessage().split(" is broken")[0].rsplit("/", 1)[-1]: r.getMessage() for r in caplog.records}
    assert sorted(lines) == ["bad_cron.yaml", "broken.yaml", "not_yaml.yml", "twin.yaml"]
    assert all("\n" not in m for m in lines.values())
    assert "every tuesday" in lines["bad_cron.yaml"]
    assert "already used by" in lines["twin.yaml"] and "manual.yaml" in lines["twin.yaml"]
    assert "line 2, column 1" in lines["not_yaml.yml"]


def test_sluice_validate_catches_the_broken_job_before_deploy():
    sluice = str(Path(sys.executable).with_name("sluice"))
    result = subprocess.run([sluice, "validate", str(JOBS_DIR)], capture_output=True, text=True)
    assert result.returncode == 2
    assert {line.split(":")[0].rsplit("/", 1)[-1] for line in result.stderr.splitlines()[:-1]} == {"broken.yaml"}
    assert "filtr" in result.stderr and "pathh" in result.stderr and "1 of 7 job file(s) invalid" in result.stderr
    assert "es_to_s3.yaml" in result.stdout  # connection: blocks validate too (placeholders)


def test_the_shipped_dag_folder_loads_every_example_job(monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.delenv("SLUICE_JOBS_DIR", raising=False)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    examples = {p.stem for p in (REPO / "dags" / "jobs").glob("*.yaml")}
    assert examples and not [d for d in bag.dag_ids if d.startswith("sluice_broken__")]
    assert len(bag.dag_ids) == len(examples)


@pytest.mark.parametrize("env_dir", [True])
def test_sluice_jobs_dir_points_the_dag_file_at_another_folder(tmp_path, monkeypatch, env_dir):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "manual.yaml").write_text((JOBS_DIR / "manual.yaml").read_text())
    monkeypatch.setenv("SLUICE_JOBS_DIR", str(tmp_path / "jobs"))
    bag = DagBag(dag_folder=str(REPO / "dags" / "sluice_dags.py"))
    assert bag.import_errors == {} and list(bag.dag_ids) == ["manual"]


def test_the_dag_docs_show_the_job_file_as_written_and_keep_angle_brackets(tmp_path):
    from sluice_airflow.factory import broken_dag, dag_for_job

    dag = dag_for_job(JOBS_DIR / "s3_to_es.yaml")
    assert "```yaml\n" + (JOBS_DIR / "s3_to_es.yaml").read_text().rstrip() + "\n```" in dag.doc_md
    assert "connection: test_es" in dag.doc_md  # secrets as written: never a resolved value
    long = "x" * 300
    path = tmp_path / "j.yaml"
    path.write_text(f"job_name: j\ndescription: {long}\nsource: {{type: nope}}\n")
    broken = broken_dag(path, ["use secret('airflow:my_os:<field>') for credentials", long])
    assert "secret('airflow:my_os:&lt;field&gt;')" in broken.doc_md  # rendered as <field>, not dropped
    assert long in broken.description  # not cut at 200 characters
