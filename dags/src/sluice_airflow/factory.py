"""Job files → Airflow DAGs whose tasks call the staged-run steps of ``sluice.stages``:
``plan → extract (mapped) → transform → load (mapped) → finalize``, or ``plan → run (mapped) →
finalize`` for a fused job.

A job file is read raw and validated at parse time with placeholder secrets and without looking
up connections (parsing must stay fast and offline); the raw dict is kept and resolved again at
task time for the run's data interval. A job file that fails to parse or validate becomes a DAG
``sluice_broken__<file>`` whose single task fails with the problems, plus one error log line, so
it is visible to the operator while every other job keeps its DAG.
"""

from __future__ import annotations

import itertools
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task

from sluice import ConfigError, stages
from sluice.config import JobConfig, ScheduleConfig, load_job, read_job_file
from sluice.records import safe_key
from sluice.stages import Layout
from sluice.templating import Interval

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


def validate_job(path: str | Path) -> tuple[dict[str, Any], JobConfig, Layout]:
    """Read and validate a job file as the DAG processor does: ``(raw dict, config, layout)``.

    Raises ConfigError listing every problem (the same checks as ``sluice validate``, plus the
    Airflow-only ones: staging must be shared by every worker, and the layout must run staged).
    """
    raw = read_job_file(path)
    job = load_job(raw, interval=PARSE_INTERVAL, secret_mode="placeholder")
    if not job.config.staging and not os.environ.get(stages.STAGING_ENV):
        raise ConfigError(f"{path}: job {job.name!r}: staging: is required to run under Airflow "
                          f"(s3://bucket/prefix, or a directory every worker shares; or set {stages.STAGING_ENV})")
    return raw, job.config, stages.layout(job)


def dag_for_job(path: str | Path) -> DAG:
    """The DAG of one job file (raises ConfigError when the file is invalid)."""
    raw, config, layout = validate_job(path)
    schedule = config.schedule
    kwargs = schedule_kwargs(schedule) if schedule else {
        "schedule": None, "start_date": MANUAL_START, "catchup": False, "max_active_runs": 1,
        "default_args": {"owner": "sluice", "retries": 0}, "tags": ["sluice"],
    }
    doc = (f"Sluice job `{config.job_name}` from `{path}`.\n\n{config.description or ''}\n\n"
           f"{' → '.join(['plan', *layout.stages, 'finalize'])} (mode {layout.mode}, transform {layout.transform})")
    with DAG(dag_id=config.job_name, description=(config.description or f"Sluice job {config.job_name}")[:200],
             doc_md=doc, **kwargs) as dag:
        _tasks(raw, layout)
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


def _label(partition: str) -> None:
    """Name the mapped task instance after its partition (``map_index_template``)."""
    get_current_context()["sluice_partition"] = partition  # type: ignore[typeddict-unknown-key]


def _interval() -> Interval:
    return run_interval(get_current_context())


def _tasks(raw: dict[str, Any], layout: Layout) -> None:
    """Declare the tasks of one job's DAG inside the current DAG context: each calls one step of
    ``sluice.stages`` with the run's interval; XCom carries only the steps' small manifests."""

    mapped = {"map_index_template": "{{ sluice_partition }}", "trigger_rule": "none_failed"}

    @task(task_id="plan")
    def plan() -> list[str]:
        """The source partitions of this interval (one mapped task each); readies the sinks."""
        return list(stages.plan(raw, _interval())["partitions"])

    @task(task_id="extract", **mapped)
    def extract(partition: str) -> dict[str, Any]:
        """Source partition → staging."""
        _label(partition)
        return stages.extract(raw, _interval(), partition)

    @task(task_id="transform", **mapped)
    def transform_partition(partition: str) -> dict[str, Any]:
        """Staged partition → transform steps → staging."""
        _label(partition)
        return stages.transform(raw, _interval(), partition)

    @task(task_id="transform", trigger_rule="none_failed")
    def transform_all(partitions: list[str]) -> list[str]:
        """Every staged partition → transform steps (with run-wide state) → staging, in one task.
        Returns the partitions to load: every source partition, and the run-wide one."""
        return list(stages.transform(raw, _interval(), None)["partitions"]) or list(partitions)

    @task(task_id="load", **mapped)
    def load(partition: str) -> dict[str, Any]:
        """Staged partition → destination, uncommitted."""
        _label(partition)
        return stages.load(raw, _interval(), partition)

    @task(task_id="run", **mapped)
    def run(partition: str) -> dict[str, Any]:
        """Fused: source partition → transform steps → destination, uncommitted."""
        _label(partition)
        return stages.run_partition(raw, _interval(), partition)

    @task(task_id="finalize", trigger_rule="none_failed")
    def finalize() -> dict[str, Any]:
        """Reconcile every step, judge the error rate, commit dead letters and destination."""
        return stages.finalize(raw, _interval())

    planned = plan()
    if layout.mode == "fused":
        run.expand(partition=planned) >> finalize()
        return
    steps: list[Any] = [extract.expand(partition=planned)]
    to_load = planned
    if layout.transform == "separate":
        steps.append(transform_partition.expand(partition=planned))
    elif layout.transform == "single":
        to_load = transform_all(planned)
        steps.append(to_load)
    steps += [load.expand(partition=to_load), finalize()]
    for upstream, downstream in itertools.pairwise(steps):
        upstream >> downstream


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
