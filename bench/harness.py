"""Measuring one process: wall time, CPU (user+sys) and peak RSS, read from the kernel via wait4."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Measurement:
    """One process run: the kernel's view plus what the process reported about itself."""

    wall_s: float
    cpu_s: float
    max_rss_mb: float
    docs: int
    work_s: float  # the timed section the process reports (the engine's duration for Sluice)

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.work_s if self.work_s else 0.0

    @property
    def cpu_us_per_doc(self) -> float:
        return self.cpu_s * 1e6 / self.docs if self.docs else 0.0


def run_process(cmd: list[str], env: dict[str, str], report: Path) -> Measurement:
    """Run ``cmd``; it must write ``{"docs": N, "work_s": S}`` (or a Sluice summary) to ``report``."""
    report.unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0 or not report.exists():
        code = os.waitstatus_to_exitcode(status)
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed (exit {code}):\n{stderr[-3000:]}")
    data = orjson.loads(report.read_bytes())
    if "reconciled" in data and not data["reconciled"]:
        raise RuntimeError(f"sluice run did not reconcile: {data}")
    docs = int(data.get("docs", data.get("written", 0)))
    work = float(data.get("work_s", data.get("duration_s", wall)))
    return Measurement(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, docs, work)


def sluice_cmd(job: Path, report: Path, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "sluice.cli", "run", str(job), "--ds", "2024-01-01",
            "--summary-json", str(report), *(extra or [])]


def median(runs: list[Measurement]) -> dict[str, Any]:
    """The median of each figure over the repetitions, plus every repetition."""
    return {
        "docs": runs[0].docs,
        "docs_per_s": statistics.median(r.docs_per_s for r in runs),
        "wall_s": statistics.median(r.wall_s for r in runs),
        "cpu_us_per_doc": statistics.median(r.cpu_us_per_doc for r in runs),
        "max_rss_mb": statistics.median(r.max_rss_mb for r in runs),
        "runs": [asdict(r) | {"docs_per_s": r.docs_per_s} for r in runs],
    }
