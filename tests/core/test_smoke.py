"""The shipped local job runs and reconciles."""

from __future__ import annotations

from pathlib import Path

from sluice.testing import read_jsonl, run_job

ROOT = Path(__file__).resolve().parents[2]


def test_local_example_job_reconciles(tmp_path: Path) -> None:
    summary = run_job({
        "job_name": "smoke",
        "source": {"type": "jsonl", "path": str(ROOT / "examples/data")},
        "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
    })
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled
    assert summary.read == 2002 and summary.written == 2000
    assert summary.dead_lettered == {"source": 2}
    assert len(read_jsonl(tmp_path / "out")) == 2000
