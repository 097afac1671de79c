"""The DAG file Airflow loads: one DAG per Sluice job file.

Job files are read from ``jobs/`` beside this file, or from the folder named by ``SLUICE_JOBS_DIR``.
A broken job file keeps its DAG id and schedule, and its runs fail with the problems until it is
fixed; ``sluice_job_checks.py`` beside this file reports the same problems as an import error.
"""

from __future__ import annotations

from sluice_airflow.factory import build_dags, jobs_dir

globals().update(build_dags(jobs_dir(__file__)))
