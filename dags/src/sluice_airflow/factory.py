"""Job files → Airflow DAGs: ``plan → extract (mapped) → transform → load → finalize``.

A job file is read raw and validated at parse time with placeholder secrets and without looking
up connections (parsing must stay fast and offline); the raw dict is kept and resolved again at
task time for the run's data interval. A job file that fails to parse or validate becomes a DAG
``sluice_broken__<file>`` whose single task fails with the problems, plus one error log line, so
it is visible to the operator while every other job keeps its DAG.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task

from sluice import ConfigError
from sluice.config import JobConfig, ScheduleConfig, load_job, read_job_file
from sluice.records import safe_key
from sluice.templating import Interval

from .connections import expand_job
from .stages import RunPlan, transform_mode

log = logging.getLogger("sluice_airflow")

JOB_SUFFIXES = (".yaml", ".yml", ".json")
BROKEN_PREFIX = "sluice_broken__"
PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
PARSE_INTERVAL = Interval.for_day("2000-01-01")  # any fixed interval: parse-time validation only
MANUAL_START = pendulum.datetime(2024, 1, 1, tz="UTC")


def job_files(jobs_dir: str | Path) -> list[Path]:
    """Job files in ``jobs_dir`` and its subfolders, sorted (hidden files skipped)."""
    root = Path(jobs_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix in JOB_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def build_dags(jobs_dir: str | Path) -> dict[str, DAG]:
    """One DAG per job file in ``jobs_dir``; a broken file gets a failing ``sluice_broken__`` DAG."""
    dags: dict[str, DAG] = {}
    owners: dict[str, Path] = {}
    for path in job_files(jobs_dir):
        try:
            dag = dag_for_job(path)
            if dag.dag_id in owners:
                raise ConfigError(f"job_name {dag.dag_id!r} is already used by {owners[dag.dag_id]}")
        except Exception as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [f"{type(exc).__name__}: {exc}"]
            log.error("sluice: job file %s is broken, its DAG is not loaded: %s", path, "; ".join(problems))
            dag = broken_dag(path, problems)
        else:
            owners[dag.dag_id] = path
        dags[dag.dag_id] = dag
    return dags


def validate_job(path: str | Path) -> tuple[dict[str, Any], JobConfig, str]:
    """Read and validate a job file as the DAG processor does: ``(raw dict, config, transform mode)``.

    Raises ConfigError listing every problem (the same checks as ``sluice validate``, plus the
    Airflow-only ones: staging and ``connection:``).
    """
    raw = read_job_file(path)
    if not raw.get("staging") and os.environ.get("SLUICE_STAGING"):
        raw["staging"] = os.environ["SLUICE_STAGING"]
    job = load_job(expand_job(raw, lookup=False), interval=PARSE_INTERVAL, secret_mode="placeholder")
    if not job.config.staging:
        raise ConfigError(f"{path}: job {job.name!r}: staging: is required to run under Airflow "
                          "(s3://bucket/prefix, or a directory every worker shares; or set SLUICE_STAGING)")
    return raw, job.config, transform_mode(job)


def dag_for_job(path: str | Path) -> DAG:
    """The DAG of one job file (raises ConfigError when the file is invalid)."""
    raw, config, mode = validate_job(path)
    schedule = config.schedule
    kwargs = schedule_kwargs(schedule) if schedule else {
        "schedule": None, "start_date": MANUAL_START, "catchup": False, "max_active_runs": 1,
        "default_args": {"owner": "sluice", "retries": 0}, "tags": ["sluice"],
    }
    doc = (f"Sluice job `{config.job_name}` from `{path}`.\n\n{config.description or ''}\n\n"
           "plan → extract (one task per source partition) → transform → load → finalize")
    with DAG(dag_id=config.job_name, description=(config.description or f"Sluice job {config.job_name}")[:200],
             doc_md=doc, **kwargs) as dag:
        _tasks(raw, mode)
    return dag


def schedule_kwargs(schedule: ScheduleConfig) -> dict[str, Any]:
    """DAG arguments for a job's ``schedule:`` block (data-interval timetable, retries, tags)."""
    cron = PRESETS.get(schedule.cron.strip().lower(), schedule.cron)
    timetable = CronDataIntervalTimetable(cron, timezone=schedule.timezone)
    try:
        timetable.validate()
    except Exception as exc:
        raise ConfigError(f"schedule.cron {schedule.cron!r}: {exc}") from None
    start = schedule.start_date
    end = schedule.end_date
    return {
        "schedule": timetable,
        "start_date": pendulum.datetime(start.year, start.month, start.day, tz=schedule.timezone),
        "end_date": pendulum.datetime(end.year, end.month, end.day, tz=schedule.timezone) if end else None,
        "catchup": schedule.catchup,
        "max_active_runs": schedule.max_active_runs,
        "default_args": {"owner": schedule.owner, "retries": schedule.retries, "retry_delay": schedule.retry_delay},
        "tags": ["sluice", *[t for t in schedule.tags if t != "sluice"]],
    }


def run_interval(context: Any) -> Interval:
    """The interval a task covers: the run's data interval; for a manual run of a job without a
    schedule (empty interval), ``conf`` ``{"start", "end"}`` or ``{"ds"}``, else the UTC day before
    the run."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return Interval(_utc(start), _utc(end))
    conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
    if conf.get("start") and conf.get("end"):
        return Interval.between(str(conf["start"]), str(conf["end"]))
    if conf.get("ds"):
        return Interval.for_day(str(conf["ds"]))
    when = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None) or datetime.now(UTC)
    return Interval.for_day((_utc(when) - timedelta(days=1)).date())


def _utc(value: datetime) -> datetime:
    return datetime.fromtimestamp(value.timestamp(), UTC)


def _plan(raw: dict[str, Any]) -> RunPlan:
    return RunPlan(raw, run_interval(get_current_context()))


def _tasks(raw: dict[str, Any], mode: str) -> None:
    """Declare the tasks of one job's DAG inside the current DAG context."""

    @task(task_id="plan")
    def plan() -> list[str]:
        """The source partitions of this interval: one extract task each."""
        return _plan(raw).partitions()

    @task(task_id="extract", map_index_template="{{ sluice_partition }}")
    def extract(partition: str) -> Any:
        """Source partition → staging."""
        get_current_context()["sluice_partition"] = partition  # type: ignore[typeddict-unknown-key]
        return _plan(raw).extract(partition)

    @task(task_id="transform", map_index_template="{{ sluice_partition }}", trigger_rule="none_failed")
    def transform_partition(manifest: dict[str, Any]) -> Any:
        """Staged partition → transform steps → staging."""
        get_current_context()["sluice_partition"] = manifest["partition"]  # type: ignore[typeddict-unknown-key]
        return _plan(raw).transform(manifest["partition"])

    @task(task_id="transform", trigger_rule="none_failed")
    def transform_all(manifests: Sequence[dict[str, Any]]) -> Any:
        """Every staged partition → transform steps (with run-wide state) → staging, in one run."""
        return _plan(raw).transform(None)

    @task(task_id="transform", trigger_rule="none_failed")
    def transform_none(manifests: Sequence[dict[str, Any]]) -> Any:
        """No transform steps: load reads the extract staging directly."""
        return {"stage": "transform", "partition": "-", "skipped": True}

    @task(task_id="load", trigger_rule="none_failed")
    def load(transformed: Any) -> Any:
        """Staging → destination, uncommitted."""
        return _plan(raw).load()

    @task(task_id="finalize", trigger_rule="none_failed")
    def finalize(extracted: Any, transformed: Any, loaded: dict[str, Any]) -> Any:
        """Reconcile, persist dead letters, check the error rate, commit, clean staging."""
        transformed = [transformed] if isinstance(transformed, dict) else list(transformed or [])
        return _plan(raw).finalize(list(extracted or []), [t for t in transformed if not t.get("skipped")], loaded)

    extracted = extract.expand(partition=plan())
    if mode == "mapped":
        transformed = transform_partition.expand(manifest=extracted)
    elif mode == "single":
        transformed = transform_all(extracted)
    else:
        transformed = transform_none(extracted)
    finalize(extracted, transformed, load(transformed))


def broken_dag(path: str | Path, problems: list[str]) -> DAG:
    """A DAG that shows a broken job file: its description and its one failing task carry the problems."""
    message = f"job file {path} is invalid: " + "; ".join(problems)
    dag_id = BROKEN_PREFIX + safe_key(Path(path).stem).replace("=", "_")
    with DAG(dag_id=dag_id, schedule=None, start_date=MANUAL_START, catchup=False, tags=["sluice", "broken"],
             description=message[:200], doc_md=f"**Broken Sluice job file** `{path}`\n\n"
             + "\n".join(f"- {p}" for p in problems), default_args={"retries": 0}) as dag:

        @task(task_id="job_file_is_broken")
        def job_file_is_broken() -> None:
            """Fails with the job file's problems."""
            raise ConfigError(message)

        job_file_is_broken()
    return dag
