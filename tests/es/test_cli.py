"""The example jobs run from the command line: jsonl → ES, then ES → jsonl and an ES → ES reindex."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sluice.testing import read_jsonl

from .helpers import fetch_all

ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).parent / "sluice")


def sluice(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in the test's directory, where ``examples`` links to the repository's examples."""
    if not Path("examples").exists():
        Path("examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "ES_URL": url}
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, timeout=120, env=env)


def test_example_jobs_run_from_the_cli(os_url: str, tmp_path: Path) -> None:
    for job in ("jsonl_to_es", "es_to_jsonl", "es_reindex"):
        summary = tmp_path / f"{job}.json"
        result = sluice("run", f"examples/jobs/{job}.yaml", "--ds", "2024-01-01", "--summary-json", str(summary),
                        url=os_url)
        assert result.returncode == 0, f"{job}: {result.stdout}\n{result.stderr}"
        assert summary.exists()
    events = fetch_all(os_url, "events-*")
    assert len(events) == 2000  # 2002 lines, 2 of them malformed (dead letters)
    exported = read_jsonl("out/es_to_jsonl/date=2024-01-01")
    on_the_day = [e for e in events.values() if e["@timestamp"].startswith("2024-01-01")]
    assert len(exported) == len(on_the_day) > 0
    assert {r["_id"] for r in exported} <= set(events)
    assert fetch_all(os_url, "reindexed-events-2024-01-01") == fetch_all(os_url, "events-2024-01-01")


def test_cli_reports_a_down_cluster_in_one_line() -> None:
    result = sluice("run", "examples/jobs/es_to_jsonl.yaml", "--ds", "2024-01-01", url="http://127.0.0.1:9")
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "cannot connect to Elasticsearch/OpenSearch at http://127.0.0.1:9: connection refused" in output
    assert "Traceback" not in result.stderr
