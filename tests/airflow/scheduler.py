"""A real Airflow 3 for the tests that need a scheduler (task instances in parallel, cleared tasks,
several runs at once): api-server, scheduler (LocalExecutor, SQLite) and dag-processor as separate
processes in their own temporary ``AIRFLOW_HOME``, driven through the REST API.

It is separate from the ``AIRFLOW_HOME`` of ``conftest.py`` (used in-process by ``dag.test()``):
the processes get a clean environment (no ``AIRFLOW_*`` of the test process), a DAG folder holding
copies of the top-level DAG files of ``dags/`` and a ``jobs/`` folder of job files (by default
``scheduler_jobs/``), the Airflow connections ``sched_es`` (an osmem clone of its own) and
``sched_aws`` (the session's moto server) as ``AIRFLOW_CONN_*`` variables, and moto credentials.

Job files for this harness should not produce scheduled runs of their own: give their schedule an
``end_date`` in the past (or no schedule) and trigger the intervals a test needs with
:meth:`Airflow.trigger`; DAGs are unpaused at creation.

Use the session fixture :func:`airflow_scheduler` (import it into a test module, or into
``conftest.py`` to share one Airflow between modules). It starts Airflow the first time a test asks
for it, and stops every process by process group: SIGTERM, then SIGKILL after a grace period (the
scheduler ignores SIGTERM). Set ``SLUICE_KEEP_AIRFLOW=1`` to keep the temporary folder (logs,
database) after the session; its path is printed on failures.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEDULER_JOBS = Path(__file__).resolve().parent / "scheduler_jobs"
BUCKET = "sluice-sched"  # the bucket the scheduler job files use (create it after resetting moto)
FINAL = ("success", "failed")
TaskKey = tuple[str, int]  # (task_id, map_index); map_index -1 for an unmapped task
TaskRef = str | TaskKey  # a task (every map index of a mapped one), or one map index

# Fast loops, few processes: every component shares the 2 CPUs with the tests' own servers.
SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__CORE__PARALLELISM": "2",
    "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__API__HOST": "127.0.0.1",
    "AIRFLOW__API__EXPOSE_CONFIG": "True",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "2",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
    "AIRFLOW__SCHEDULER__POOL_METRICS_INTERVAL": "60",
    # how often the DAG processor marks DAGs gone from their file as stale (default 60 s)
    "AIRFLOW__SCHEDULER__PARSING_CLEANUP_INTERVAL": "2",
    # the task supervisor may notice its task's exit only after a select() of up to this many
    # seconds, holding the executor slot: 5 s by default
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    # a parse costs ~1 s of CPU: re-parse on demand (reparse() touches the DAG files), else rarely
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
    "AIRFLOW__DAG_PROCESSOR__STALE_DAG_THRESHOLD": "5",
    "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    "AIRFLOW__LOGGING__DAG_PROCESSOR_LOG_TARGET": "stdout",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "NO_COLOR": "1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(when: datetime) -> str:
    """An aware datetime as the REST API takes it."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: give a timezone (UTC)")
    return when.astimezone(UTC).isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


try:
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: nothing to load after fork
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the thread that started it ends (Linux
    PR_SET_PDEATHSIG), so a killed pytest leaves no Airflow behind."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))


@dataclass
class Airflow:
    """A running Airflow: its folders, environment, processes and REST API."""

    root: Path
    env: dict[str, str]
    api_url: str
    es_url: str = ""
    s3_url: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timeout: float = 120.0  # default bound of every wait

    # -- folders ----------------------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def dags_dir(self) -> Path:
        return self.root / "dags"

    @property
    def jobs_dir(self) -> Path:
        return self.dags_dir / "jobs"

    @property
    def logs_dir(self) -> Path:
        """Where the processes' stdout/stderr go (``<component>.log``)."""
        return self.root / "proc-logs"

    # -- start and stop ---------------------------------------------------------------------
    @classmethod
    def start(cls, *, jobs: Path | None = SCHEDULER_JOBS, env: dict[str, str] | None = None,
              connections: dict[str, dict[str, Any]] | None = None, es_url: str = "", s3_url: str = "",
              wait_for: Iterable[str] = (), timeout: float = 120.0) -> Airflow:
        """Start api-server, scheduler and dag-processor; wait until the API answers, the scheduler
        and the DAG processor heartbeat, and the DAGs ``wait_for`` are parsed.

        ``connections``: conn_id → connection dict (as JSON in ``AIRFLOW_CONN_<ID>``); ``env``: more
        variables for every Airflow process (they win over the defaults here).
        """
        root = Path(tempfile.mkdtemp(prefix="sluice-sched-"))
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        base = {k: v for k, v in os.environ.items()  # none of the test process's Airflow or job settings
                if not k.startswith(("AIRFLOW", "SLUICE_", "TEST_", "PYTEST_")) and k != "AWS_PROFILE"}
        full = {
            **base, **SETTINGS,
            "AIRFLOW_HOME": str(root / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            **{f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in (connections or {}).items()},
            **(env or {}),
        }
        airflow = cls(root, full, api_url, es_url=es_url, s3_url=s3_url, timeout=timeout)
        airflow.dags_dir.mkdir()
        airflow.logs_dir.mkdir()
        for dag_file in (REPO / "dags").glob("*.py"):  # the DAG files Airflow is pointed at
            shutil.copy(dag_file, airflow.dags_dir / dag_file.name)
        if jobs is not None:
            shutil.copytree(jobs, airflow.jobs_dir)
        else:
            airflow.jobs_dir.mkdir()
        try:
            deadline = time.monotonic() + timeout
            migrate = subprocess.run([*cls._airflow(), "db", "migrate"], env=full, cwd=root, capture_output=True,
                                     timeout=timeout)
            if migrate.returncode:
                raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout.decode()[-3000:]}"
                                   f"{migrate.stderr.decode()[-3000:]}")
            for name, args in (("api-server", ["api-server", "--port", str(port), "--host", "127.0.0.1"]),
                               ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"])):
                airflow._spawn(name, args)
            airflow._wait("the API server, scheduler and DAG processor to be healthy", airflow._healthy,
                          deadline - time.monotonic())
            for dag_id in wait_for:
                airflow.wait_for_dag(dag_id, timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            diagnostics = airflow.diagnostics()
            airflow.stop()
            raise RuntimeError(f"Airflow did not start: {type(exc).__name__}: {exc}\n{diagnostics}") from exc
        except BaseException:  # Ctrl-C, a pytest timeout
            airflow.stop()
            raise
        return airflow

    @staticmethod
    def _airflow() -> list[str]:
        return [sys.executable, "-m", "airflow"]

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        out = (self.logs_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [*self._airflow(), *args], env=self.env, cwd=self.root, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        out.close()

    def stop(self, grace: float = 3.0, *, keep: bool | None = None) -> None:
        """Stop every process group (SIGTERM, SIGKILL after ``grace`` seconds), then remove the folder
        (unless ``keep`` or ``$SLUICE_KEEP_AIRFLOW``)."""
        import psutil

        family: list[psutil.Process] = []
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(proc.pid)
                family += [top, *top.children(recursive=True)]  # also any that left the group
        groups = {proc.pid for proc in self.procs.values()}  # start_new_session: pgid == pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            for p in family:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(sig)
            if sig == signal.SIGTERM:
                _, alive = psutil.wait_procs(family, timeout=grace)
                if not alive:
                    break
        psutil.wait_procs(family, timeout=5)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        if not (keep if keep is not None else os.environ.get("SLUICE_KEEP_AIRFLOW")):
            shutil.rmtree(self.root, ignore_errors=True)

    def diagnostics(self, lines: int = 40) -> str:
        """Where the Airflow folder is, which processes exited, and the tail of each process log."""
        out = [f"Airflow folder: {self.root} (SLUICE_KEEP_AIRFLOW=1 keeps it)"]
        for name, proc in self.procs.items():
            code = proc.poll()
            out.append(f"-- {name} (pid {proc.pid}): {'running' if code is None else f'exited {code}'}")
            path = self.logs_dir / f"{name}.log"
            if path.exists():
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)

    def _check_alive(self) -> None:
        dead = {n: p.poll() for n, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow processes exited: {dead}\n{self.diagnostics()}")

    def _wait(self, what: str, ready: Callable[[], Any], timeout: float | None = None,
              interval: float = 0.3, detail: Callable[[], str] | None = None) -> Any:
        """Poll ``ready()`` until it returns something truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._check_alive()
            value = ready()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}"
                                     + (f"\n{detail()}" if detail else f"\n{self.diagnostics(15)}"))
            time.sleep(interval)

    def _healthy(self) -> bool:
        import httpx

        try:
            health = self.api("GET", "/api/v2/monitor/health")
        except (httpx.HTTPError, RuntimeError):
            return False
        return all((health.get(part) or {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "dag_processor"))

    # -- REST API ---------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
            ok: Iterable[int] = (200, 201, 204)) -> Any:
        """One REST call (auth is off: every user is admin); the decoded JSON answer.
        Raises RuntimeError with the answer when the status is not in ``ok``."""
        import httpx

        r = httpx.request(method, self.api_url + path, json=body, params=params, timeout=30.0)
        if r.status_code not in tuple(ok):
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:2000]}")
        return r.json() if r.content else None

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the API shows it (None while it is not parsed yet)."""
        return self.api("GET", f"/api/v2/dags/{quote(dag_id)}", ok=(200, 404)) if dag_id else None

    def dags(self) -> dict[str, dict[str, Any]]:
        """Every DAG the DAG processor stored (stale ones too), by id."""
        return {d["dag_id"]: d for d in self._paged("/api/v2/dags", "dags", {"paused": None})}

    def wait_for_dag(self, dag_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the DAG is parsed, active and unpaused."""
        def ready() -> dict[str, Any] | None:
            dag = self.dag(dag_id)
            return dag if dag and "dag_id" in dag and not dag["is_stale"] and not dag["is_paused"] else None
        return self._wait(f"DAG {dag_id!r} to be parsed", ready, timeout,
                          detail=lambda: f"import errors: {self.import_errors()}\n{self.diagnostics(15)}")

    def import_errors(self) -> dict[str, str]:
        """The DAG processor's import errors: file → stack trace."""
        return {e["filename"]: e["stack_trace"] for e in self._paged("/api/v2/importErrors", "import_errors")}

    def _paged(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        query = {k: v for k, v in (params or {}).items() if v is not None}
        while True:
            page = self.api("GET", path, params={**query, "limit": 100, "offset": len(out)})
            out += page[key]
            if not page[key] or len(out) >= page["total_entries"]:
                return out

    # -- runs -------------------------------------------------------------------------------
    def trigger(self, dag_id: str, start: datetime, end: datetime, *, logical_date: datetime | None = None,
                run_id: str | None = None, conf: dict[str, Any] | None = None) -> str:
        """Create a run of ``dag_id`` for the data interval ``[start, end)``; returns its run id.

        The logical date defaults to ``start``, as for a scheduled run of a data-interval timetable.
        Airflow allows one run per DAG and logical date: give another ``logical_date`` (or use
        :meth:`trigger_many`) to run one interval twice at once.
        """
        body: dict[str, Any] = {"logical_date": iso(logical_date or start), "data_interval_start": iso(start),
                                "data_interval_end": iso(end), "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        run = self.api("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns", body)
        got = (_parse_time(run["data_interval_start"]), _parse_time(run["data_interval_end"]))
        assert got == (start, end), f"run {run['dag_run_id']} got data interval {got}, not {(start, end)}"
        return str(run["dag_run_id"])

    def trigger_many(self, dag_id: str, start: datetime, end: datetime, count: int = 2, **kwargs: Any) -> list[str]:
        """``count`` runs of one data interval created back to back (logical dates ``start``,
        ``start + 1 s``, ...); they run at once only if the DAG's ``max_active_runs`` allows it."""
        return [self.trigger(dag_id, start, end, logical_date=start + timedelta(seconds=i), **kwargs)
                for i in range(count)]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}")  # type: ignore[no-any-return]

    def wait_run(self, dag_id: str, run_id: str, expect: str | None = "success", timeout: float | None = None) -> str:
        """Wait until the run is ``success`` or ``failed``; returns the state. When ``expect`` is
        given and not met, or on timeout, fails with every task state and the logs of failed tasks."""
        def finished() -> str | None:
            state = self.run(dag_id, run_id)["state"]
            return state if state in FINAL else None

        state = self._wait(f"run {dag_id}/{run_id} to finish", finished, timeout, interval=0.3,
                           detail=lambda: self.explain(dag_id, run_id))
        if expect is not None and state != expect:
            raise AssertionError(f"run {dag_id}/{run_id} is {state}, not {expect}\n{self.explain(dag_id, run_id)}")
        return str(state)

    def task_instances(self, dag_id: str, run_id: str) -> dict[TaskKey, dict[str, Any]]:
        """Every task instance of a run (mapped ones per map index): ``{(task_id, map_index): ti}``;
        ``ti`` has ``state``, ``try_number``, ``rendered_map_index`` (the partition), dates..."""
        tis = self._paged(f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances", "task_instances")
        return {(ti["task_id"], ti["map_index"]): ti for ti in tis}

    def states(self, dag_id: str, run_id: str) -> dict[TaskKey, str | None]:
        """``{(task_id, map_index): state}`` of a run."""
        return {k: ti["state"] for k, ti in sorted(self.task_instances(dag_id, run_id).items())}

    def clear(self, dag_id: str, run_id: str, tasks: Sequence[TaskRef], *, downstream: bool = False,
              upstream: bool = False) -> list[TaskKey]:
        """Clear task instances of a run, as an operator does in the UI: a task id clears every map
        index of a mapped task, ``(task_id, map_index)`` one of them; with ``downstream`` also what
        depends on them (Airflow picks the relevant map indexes). The run goes back to queued.
        Returns the task instances cleared."""
        body = {"dry_run": False, "only_failed": False, "reset_dag_runs": True, "dag_run_id": run_id,
                "task_ids": [list(t) if isinstance(t, tuple) else t for t in tasks],
                "include_downstream": downstream, "include_upstream": upstream}
        answer = self.api("POST", f"/api/v2/dags/{quote(dag_id)}/clearTaskInstances", body)
        return sorted((ti["task_id"], ti["map_index"]) for ti in answer["task_instances"])

    def rerun(self, dag_id: str, run_id: str, tasks: Sequence[TaskRef], *, downstream: bool = False,
              upstream: bool = False, expect: str | None = "success", timeout: float | None = None) -> list[TaskKey]:
        """Clear (see :meth:`clear`), wait for the run to finish again, and check that every cleared
        task instance ran again (a new try). Returns the task instances cleared."""
        before = self.task_instances(dag_id, run_id)
        cleared = self.clear(dag_id, run_id, tasks, downstream=downstream, upstream=upstream)
        assert cleared, f"clearing {tasks} (downstream={downstream}) of {dag_id}/{run_id} cleared nothing"
        self.wait_run(dag_id, run_id, expect=expect, timeout=timeout)
        after = self.task_instances(dag_id, run_id)
        # a mapped task that had not expanded yet (its upstream failed) comes back under new map indexes
        stale = [k for k in cleared if k in before and k in after
                 and after[k]["try_number"] <= before[k]["try_number"]]
        assert not stale, f"cleared but not run again: {stale}\n{self.explain(dag_id, run_id)}"
        return cleared

    # -- what a task left -------------------------------------------------------------------
    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
        """A task instance's XCom value (its return value by default)."""
        answer = self.api("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/"
                                 f"{quote(task_id)}/xcomEntries/{quote(key)}",
                          params={"map_index": map_index, "deserialize": "true"})
        return answer["value"]

    def log_file(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1,
                 try_number: int | None = None) -> Path | None:
        """The local log file of a task instance's try (the latest when ``try_number`` is None)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder /= f"map_index={map_index}"
        tries = sorted(folder.glob("attempt=*.log"), key=lambda p: int(p.stem.split("=")[1]))
        if try_number is not None:
            tries = [p for p in tries if p.stem == f"attempt={try_number}"]
        return tries[-1] if tries else None

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1,
                 try_number: int | None = None) -> str:
        """A task instance's log as text lines ``time level event key=value...`` ('' when none)."""
        path = self.log_file(dag_id, run_id, task_id, map_index, try_number)
        if path is None:
            return ""
        lines = []
        for raw in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                lines.append(raw)
                continue
            if not isinstance(entry, dict):
                lines.append(raw)
                continue
            head = [str(entry.pop(k, "")) for k in ("timestamp", "level", "event")]
            for k in ("logger", "filename", "lineno"):
                entry.pop(k, None)
            rest = " ".join(f"{k}={v}" for k, v in entry.items())
            lines.append(" ".join(p for p in [*head, rest] if p))
        return "\n".join(lines)

    def explain(self, dag_id: str, run_id: str, log_lines: int = 30) -> str:
        """Every task state of a run, and the log tail of each failed (or upstream-failed) one."""
        try:
            tis = self.task_instances(dag_id, run_id)
        except Exception as exc:
            return f"(cannot read the task instances: {exc})\n{self.diagnostics(15)}"
        out = [f"task states of {dag_id}/{run_id}:"]
        out += [f"  {t}[{m}] {ti['rendered_map_index'] or ''}: {ti['state']} (try {ti['try_number']})"
                for (t, m), ti in sorted(tis.items())]
        for (t, m), ti in sorted(tis.items()):
            if ti["state"] in ("failed", "up_for_retry"):
                tail = self.task_log(dag_id, run_id, t, m).splitlines()[-log_lines:]
                out += [f"-- log of {t}[{m}]:", *tail]
        out.append(f"Airflow folder: {self.root}")
        return "\n".join(out)

    # -- job files --------------------------------------------------------------------------
    def write_job(self, name: str, text: str, *, wait: bool = True, until: Callable[[], Any] | None = None,
                  timeout: float | None = None) -> Path:
        """Write (or rewrite) the job file ``jobs/<name>``; with ``wait``, wait for the DAG processor
        to parse the DAG folder again (and for ``until()`` to hold), see :meth:`reparse`.

        Tasks re-read job files when they start, so a change that keeps the DAG's shape needs no
        wait; a new, renamed, broken or rescheduled job does."""
        path = self.jobs_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # hidden: never seen half written
        tmp.write_text(text)
        tmp.replace(path)
        if wait:
            self.reparse(until=until, timeout=timeout)
        return path

    def remove_job(self, name: str, *, wait: bool = True, timeout: float | None = None) -> None:
        """Delete the job file ``jobs/<name>``; with ``wait``, wait for a parse after it."""
        (self.jobs_dir / name).unlink()
        if wait:
            self.reparse(timeout=timeout)

    def reparse(self, until: Callable[[], Any] | None = None, timeout: float | None = None) -> None:
        """Wait for the DAG processor to parse the DAG files again, from a parse started after this
        call (the DAG files are touched so it does not wait for ``min_file_process_interval``), and,
        when given, until ``until()`` is truthy.

        "Parsed" is judged from the DAGs' ``last_parsed_time``, i.e. from ``sluice_dags.py``; a DAG
        file that defines no DAG (``sluice_job_checks.py``) is parsed in the same round but shows only
        through its import error: wait for it with ``until``, e.g. ``lambda: af.import_errors()`` or
        ``lambda: not af.import_errors()``. A DAG whose job file is gone turns stale a few seconds
        later: ``until=lambda: af.dag(dag_id)["is_stale"]``."""
        since = datetime.now(UTC)
        touched = 0.0

        def parsed() -> bool:
            nonlocal touched
            if time.monotonic() - touched > 2:  # again, in case a parse in progress swallowed the touch
                for dag_file in self.dags_dir.glob("*.py"):
                    os.utime(dag_file)
                touched = time.monotonic()
            starts = [_parse_time(d["last_parsed_time"]) - timedelta(seconds=d["last_parse_duration"] or 0)  # type: ignore[operator]
                      for d in self.dags().values() if d["last_parsed_time"]]
            return any(s > since for s in starts) and (until is None or bool(until()))

        self._wait("the DAG processor to parse the DAG folder again", parsed, timeout, interval=0.5,
                   detail=lambda: f"import errors: {self.import_errors()}\n{self.diagnostics(15)}")


def moto_connection(moto_url: str) -> dict[str, Any]:
    return {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"region_name": "us-east-1", "endpoint_url": moto_url}}


def es_connection(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {"conn_type": "elasticsearch", "host": parts.hostname, "port": parts.port, "schema": parts.scheme}


@pytest.fixture(scope="session")
def airflow_scheduler(osmem_server: Any, moto_url: str) -> Iterator[Airflow]:
    """A real Airflow (scheduler, dag-processor, api-server; LocalExecutor on SQLite) for the session,
    started the first time a test asks for it, with the job files of ``scheduler_jobs/``.

    Connections: ``sched_es`` → an osmem clone kept for the session (``airflow.es_url``), ``sched_aws``
    → the session's moto server (``airflow.s3_url``; tests reset it with the ``s3`` fixture and then
    create ``BUCKET``).
    """
    clone = osmem_server.clone()
    try:
        connections = {"sched_es": es_connection(str(clone.url)), "sched_aws": moto_connection(moto_url)}
        try:
            airflow = Airflow.start(connections=connections, es_url=str(clone.url), s3_url=moto_url)
        except RuntimeError:  # once more: e.g. a free port taken meanwhile
            airflow = Airflow.start(connections=connections, es_url=str(clone.url), s3_url=moto_url)
        try:
            yield airflow
        finally:
            airflow.stop()
    finally:
        clone.close()
