"""Real Airflow 3 for the DAG factory tests: a temp AIRFLOW_HOME with SQLite, a DAG folder holding a
copy of ``dags/sluice_dags.py``, ``dags/sluice_job_checks.py`` and the test job files, and ``dag.test()`` runs.

Airflow reads its configuration when it is first imported, so the environment is set here, at
import time, before any test module imports airflow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HOME = Path(tempfile.mkdtemp(prefix="sluice-airflow-"))
DAGS_DIR = HOME / "dags"
JOBS_DIR = DAGS_DIR / "jobs"
BUCKET = "sluice-af"

DAGS_DIR.mkdir()
for dag_file in ("sluice_dags.py", "sluice_job_checks.py"):
    shutil.copy(REPO / "dags" / dag_file, DAGS_DIR / dag_file)
shutil.copytree(Path(__file__).parent / "jobs", JOBS_DIR)

os.environ.update({
    "AIRFLOW_HOME": str(HOME / "home"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),  # dag.test() serializes the DAGs of this folder
    "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    # job files template their endpoints from these; parse-time values until a test sets real ones
    "TEST_STAGING": str(HOME / "staging"),
    "TEST_DATA": str(HOME / "data"),
    "TEST_OUT": str(HOME / "out"),
})
os.environ.pop("SLUICE_JOBS_DIR", None)
os.environ.pop("SLUICE_STAGING", None)


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Iterator[None]:
    """Airflow's metadata database (SQLite in the temp AIRFLOW_HOME), created once."""
    from airflow.utils.db import initdb

    initdb()
    yield
    shutil.rmtree(HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def dagbag() -> Any:
    """The test DAG folder parsed as the DAG processor does."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture
def get_dag(dagbag: Any) -> Iterator[Any]:
    """A DAG of the test folder with retries off (dag.test() would sleep through retry_delay)."""

    changed: list[tuple[Any, int]] = []

    def get(dag_id: str) -> Any:
        dag = dagbag.get_dag(dag_id)
        assert dag is not None, f"no DAG {dag_id!r}; import errors: {dagbag.import_errors}"
        for t in dag.tasks:
            changed.append((t, t.retries))
            t.retries = 0
        return dag

    yield get
    for t, retries in changed:  # the DAG bag is shared by the session: leave it as parsed
        t.retries = retries


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Per-test folders for the local jobs' input, output and staging."""
    paths = {"TEST_DATA": tmp_path / "data", "TEST_OUT": tmp_path / "out", "TEST_STAGING": tmp_path / "staging"}
    for name, path in paths.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return paths


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch, moto_url: str, s3: Any, osmem_clone: Any) -> dict[str, str]:
    """Airflow connections ``test_es`` (an osmem clone) and ``test_aws`` (moto), and the bucket."""
    from urllib.parse import urlsplit

    es = urlsplit(str(osmem_clone.url))
    monkeypatch.setenv("AIRFLOW_CONN_TEST_ES", json.dumps(
        {"conn_type": "elasticsearch", "host": es.hostname, "port": es.port, "schema": es.scheme}))
    monkeypatch.setenv("AIRFLOW_CONN_TEST_AWS", json.dumps(
        {"conn_type": "aws", "login": "af-key-id", "password": "af-secret-key-9f3c",
         "extra": {"region_name": "us-east-1", "endpoint_url": moto_url}}))
    s3.create_bucket(Bucket=BUCKET)
    return {"es": str(osmem_clone.url), "s3": moto_url}


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """Every test here needs apache-airflow (``pytest -m 'not airflow'`` leaves them out)."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.airflow)
