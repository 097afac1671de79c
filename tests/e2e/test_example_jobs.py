"""Every job file we ship (examples and Airflow jobs) validates with the installed plugins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_job_file_validates() -> None:
    sluice = str(Path(sys.executable).parent / "sluice")
    result = subprocess.run([sluice, "validate", str(ROOT / "examples/jobs"), str(ROOT / "dags/jobs"),
                             str(ROOT / "core/src/sluice/demo/jobs")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok  ") >= 12
