"""Airflow DAG-folder check for Sluice job files: defines no DAG, and fails to import (an import
error in Airflow's UI, naming each broken job file and its problems) while any job file is broken.

The broken jobs' DAGs themselves come from ``sluice_dags.py``: they keep their ids and schedules
and fail every run with the same problems, so alerting on failed runs fires too.
"""

from __future__ import annotations

from sluice_airflow.factory import check_job_files, jobs_dir

check_job_files(jobs_dir(__file__))
