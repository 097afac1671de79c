"""Job files → Airflow DAGs whose tasks call the staged-run steps of ``sluice.stages``:
``plan → extract (mapped) → transform → load (mapped) → finalize``, or ``plan → run (mapped) →
finalize`` for a fused job.

A job file is read raw and validated at parse time with placeholder secrets and without looking
up connections (parsing must stay fast and offline); the raw dict is kept and resolved again at
task time for the run's data interval. When Airflow parses the file to run one task, only that
task's job is built.

A job file that fails to validate keeps its DAG id and schedule (as far as the file parses):
its DAG's one task fails every run with the problems, so the schedule keeps running and alerting.
``check_job_files`` (called by ``dags/sluice_job_checks.py``) turns the same problems into an
Airflow import error naming the files and fields.
"""

from __future__ import annotations

import html
import itertools
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, get_parsing_context, task
from pydantic import ValidationError

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
JOBS_DIR_ENV = "SLUICE_JOBS_DIR"
_JOB_NAME = re.compile(r"^job_name:\s*[\"']?([A-Za-z0-9][A-Za-z0-9_.-]*)", re.MULTILINE)


def jobs_dir(dag_file: str | Path) -> Path:
    """Where the job files are: ``$SLUICE_JOBS_DIR``, else ``jobs/`` beside the DAG file."""
    return Path(os.environ.get(JOBS_DIR_ENV) or Path(dag_file).resolve().parent / "jobs")


def job_files(jobs_dir: str | Path) -> list[Path]:
    """Job files in ``jobs_dir`` and its subfolders, sorted (hidden files skipped)."""
    root = Path(jobs_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.suffix in JOB_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def declared_name(path: Path) -> str | None:
    """The ``job_name`` a job file declares, read as far as the file parses (None: none found)."""
    try:
        name = read_job_file(path).get("job_name")
    except ConfigError:  # not YAML (any more): a plain look at the text
        match = _JOB_NAME.search(path.read_text(encoding="utf-8", errors="replace"))
        return match[1] if match else None
    return name if isinstance(name, str) and _JOB_NAME.match(f"job_name: {name}") else None


def build_dags(jobs_dir: str | Path) -> dict[str, DAG]:
    """One DAG per job file in ``jobs_dir``; a broken file's DAG fails every run with its problems.

    When Airflow parses the DAG file to run one task (``get_parsing_context()``), only that DAG is
    built, and other files' problems are not logged into the task's log.
    """
    wanted = get_parsing_context().dag_id
    dags: dict[str, DAG] = {}
    owners: dict[str, Path] = {}
    for path in job_files(jobs_dir):
        if wanted is not None and wanted not in (declared_name(path), broken_id(path)):
            continue
        try:
            dag = dag_for_job(path)
            if dag.dag_id in owners:
                raise ConfigError(f"job_name {dag.dag_id!r} is already used by {owners[dag.dag_id]}")
        except Exception as exc:
            problems = problems_of(exc)
            if wanted is None:
                log.error("sluice: job file %s is broken, its DAG fails every run until it is fixed: %s", path,
                          "; ".join(problems))
            dag = broken_dag(path, problems, taken=set(owners))
        else:
            owners[dag.dag_id] = path
        dags[dag.dag_id] = dag
    return dags


def problems_of(exc: BaseException) -> list[str]:
    return exc.problems if isinstance(exc, ConfigError) else [f"{type(exc).__name__}: {exc}"]


def check_job_files(jobs_dir: str | Path) -> None:
    """Raise one ConfigError naming every broken job file and its problems (an Airflow import error
    of the checking DAG file); do nothing when all are valid, or when parsing to run a task."""
    if get_parsing_context().dag_id is not None:
        return
    broken: list[str] = []
    for path in job_files(jobs_dir):
        try:
            validate_job(path)
        except Exception as exc:
            broken.extend(f"{path}: {problem}" for problem in problems_of(exc))
    if broken:
        raise ConfigError("Sluice job files are broken; their DAGs fail every run until they are fixed:\n"
                          + "\n".join(f"- {line}" for line in broken))


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
    with DAG(dag_id=config.job_name, description=config.description or f"Sluice job {config.job_name}",
             doc_md=doc + _source(path), **kwargs) as dag:
        _tasks(raw, layout)
    return dag


def _source(path: str | Path) -> str:
    """The job file as written (templates and ``secret()`` calls, never their values), for the DAG docs:
    Airflow's Code tab shows only the DAG file."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    fence = "~~~~" if "```" in text else "```"
    return f"\n\n**Job file** `{Path(path).name}`:\n\n{fence}yaml\n{text.rstrip()}\n{fence}\n"


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
    the run. A conf interval that the run's own data interval overrides is warned about."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
    asked = _conf_interval(conf)
    if start is not None and end is not None and end > start:
        interval = Interval(_utc(start), _utc(end))
        if asked is not None and asked != interval:
            log.warning("sluice: this run's conf %s is ignored: a scheduled job processes the run's data interval "
                        "%s to %s (trigger with an explicit data interval, or remove the schedule to use conf)",
                        {k: conf[k] for k in ("ds", "start", "end") if k in conf}, interval.start.isoformat(),
                        interval.end.isoformat())
        return interval
    if asked is not None:
        return asked
    when = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None) or datetime.now(UTC)
    return Interval.for_day((_utc(when) - timedelta(days=1)).date())


def _conf_interval(conf: dict[str, Any]) -> Interval | None:
    if conf.get("start") and conf.get("end"):
        return Interval.between(str(conf["start"]), str(conf["end"]))
    if conf.get("ds"):
        return Interval.for_day(str(conf["ds"]))
    return None


def _utc(value: datetime) -> datetime:
    return datetime.fromtimestamp(value.timestamp(), UTC)


def _label(partition: str) -> None:
    """Name the mapped task instance after its partition (``map_index_template``)."""
    get_current_context()["sluice_partition"] = partition  # type: ignore[typeddict-unknown-key]


def _run() -> tuple[Interval, str]:
    """The task's interval and its run's id (the owner of the interval's lease), logged."""
    context = get_current_context()
    interval = run_interval(context)
    owner = str(getattr(context.get("dag_run"), "run_id", None) or context.get("run_id"))
    log.info("sluice: run %s processes the interval %s to %s", owner, interval.start.isoformat(),
             interval.end.isoformat())
    return interval, owner


def _mapped(step: Callable[..., dict[str, Any]], raw: dict[str, Any], partition: str) -> dict[str, Any]:
    """A mapped task's body: label the task instance after its partition and run ``step`` for it."""
    _label(partition)
    interval, owner = _run()
    return step(raw, interval, partition, owner)


def _tasks(raw: dict[str, Any], layout: Layout) -> None:
    """Declare the tasks of one job's DAG inside the current DAG context: each calls one step of
    ``sluice.stages`` with the run's interval; XCom carries only the steps' small manifests."""

    mapped = {"map_index_template": "{{ sluice_partition }}", "trigger_rule": "none_failed"}

    @task(task_id="plan")
    def plan() -> list[str]:
        """The source partitions of this interval (one mapped task each); readies the sinks."""
        return list(stages.plan(raw, *_run())["partitions"])

    @task(task_id="extract", **mapped)
    def extract(partition: str) -> dict[str, Any]:
        """Source partition → staging."""
        return _mapped(stages.extract, raw, partition)

    @task(task_id="transform", **mapped)
    def transform_partition(partition: str) -> dict[str, Any]:
        """Staged partition → transform steps → staging."""
        return _mapped(stages.transform, raw, partition)

    @task(task_id="transform", trigger_rule="none_failed")
    def transform_all(partitions: list[str]) -> list[str]:
        """Every staged partition → transform steps (with run-wide state) → staging, in one task.
        Returns the partitions to load: every source partition, and the run-wide one."""
        interval, owner = _run()
        return list(stages.transform(raw, interval, None, owner)["partitions"]) or list(partitions)

    @task(task_id="load", **mapped)
    def load(partition: str) -> dict[str, Any]:
        """Staged partition → destination, uncommitted."""
        return _mapped(stages.load, raw, partition)

    @task(task_id="run", **mapped)
    def run(partition: str) -> dict[str, Any]:
        """Fused: source partition → transform steps → destination, uncommitted."""
        return _mapped(stages.run_partition, raw, partition)

    @task(task_id="finalize", trigger_rule="none_failed")
    def finalize() -> dict[str, Any]:
        """Reconcile every step, judge the error rate, commit dead letters and destination."""
        return stages.finalize(raw, *_run())

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


def broken_id(path: Path) -> str:
    """The DAG id of a job file whose ``job_name`` cannot be read (or is taken by another file)."""
    return BROKEN_PREFIX + safe_key(path.stem).replace("=", "_")


def broken_dag(path: str | Path, problems: list[str], taken: set[str] = frozenset()) -> DAG:  # type: ignore[assignment]
    """The DAG of a broken job file: its own DAG id and schedule when the file still names them, and
    one task that fails every run with the problems (so alerting on failed runs fires)."""
    path = Path(path)
    message = f"job file {path} is invalid: " + "; ".join(problems)
    name = declared_name(path)
    dag_id = name if name and name not in taken else broken_id(path)
    kwargs: dict[str, Any] = {"schedule": None, "start_date": MANUAL_START, "catchup": False,
                              "default_args": {"retries": 0}}
    try:
        block = read_job_file(path).get("schedule")
        if isinstance(block, dict):
            kwargs = schedule_kwargs(ScheduleConfig.model_validate(block))
            kwargs["default_args"] = {**kwargs["default_args"], "retries": 0}
    except (ConfigError, ValidationError):
        pass  # the problems already say what is wrong with it: run it by hand only
    kwargs["tags"] = sorted({*kwargs.get("tags", ["sluice"]), "sluice", "broken"})
    listed = "\n".join(f"- {html.escape(p, quote=False)}" for p in problems)
    with DAG(dag_id=dag_id, description=message, doc_md=f"**Broken Sluice job file** `{path}`: every run fails "
             f"until it is fixed.\n\n{listed}" + _source(path), **kwargs) as dag:

        @task(task_id="job_file_is_broken")
        def job_file_is_broken() -> None:
            """Fails with the job file's problems."""
            raise ConfigError(message)

        job_file_is_broken()
    return dag
