"""The DAG file Airflow loads: one DAG per Sluice job file.

Job files are read from ``jobs/`` beside this file, or from the folder named by ``SLUICE_JOBS_DIR``.
A broken job file shows up as a failing ``sluice_broken__<file>`` DAG; the others still load.
"""

from __future__ import annotations

import os
from pathlib import Path

from sluice_airflow.factory import build_dags

JOBS_DIR = Path(os.environ.get("SLUICE_JOBS_DIR") or Path(__file__).resolve().parent / "jobs")

globals().update(build_dags(JOBS_DIR))
