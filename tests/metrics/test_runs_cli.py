"""``sluice runs``: list, show (with a chart of throughput per partition) and last, over the history."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sluice import cli
from sluice.stages import run_staged
from sluice.testing import load_test_job, run_job

from .helpers import job

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = "{}-20240101T000000-20240102T000000"


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich's width off a terminal


def runs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what the runs before printed (structlog's default goes to stdout)
    code = cli.main(["runs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sluice_runs_lists_the_latest_first_filters_by_job_and_since_and_prints_json(
        history_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_job(job("alpha"), ds="2024-01-01")
    run_job(job("beta"), ds="2024-01-01")
    run_job(job("alpha"), ds="2024-01-02")

    code, out, _ = runs(capsys)
    assert code == 0
    assert out.index("alpha-20240102") < out.index("beta-20240101") < out.index("alpha-20240101")

    code, out, _ = runs(capsys, "--job", "alpha", "--json")
    listed = orjson.loads(out)
    assert code == 0 and [r["run_id"] for r in listed] == ["alpha-20240102T000000-20240103T000000",
                                                           RUN_ID.format("alpha")]
    assert [(r["read"], r["written"], r["dead_lettered"], r["status"]) for r in listed] == \
        [(200, 154, 26, "succeeded")] * 2

    code, out, _ = runs(capsys, "--since", "1d", "--json")
    assert len(orjson.loads(out)) == 3
    code, out, _ = runs(capsys, "--since", "2999-01-01", "--json")
    assert orjson.loads(out) == []
    code, _, err = runs(capsys, "--since", "last tuesday")
    assert code == 2 and "--since 'last tuesday': expected a date" in err


def test_runs_show_prints_counts_partitions_with_a_throughput_chart_dead_letters_and_the_error(
        history_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_staged(load_test_job(job("shown", staging={"uri": "staging"}))).status == "succeeded"
    code, out, _ = runs(capsys, "show", RUN_ID.format("shown"))
    assert code == 0
    for text in ("succeeded", "staged run", "read", "200", "written", "154", "filtered steps[0]:drop_every", "20",
                 "dead-lettered steps[1]:reject_every", "26", "dead letters", "partitions done", "2/2"):
        assert text in out, text
    chart = [line for line in out.splitlines() if line.lstrip("│ ").startswith(("p0", "p1"))]
    assert len(chart) == 2 and all("█" in line for line in chart), out  # one bar per partition

    run_job(job("shown", source={"fail_partition": "p1", "fail_at": 50}))  # a second attempt, failed
    code, out, _ = runs(capsys, "show", RUN_ID.format("shown"))
    assert code == 0
    assert "attempt 2 of 2" in out and "source broke in p1 at n=50" in out
    p0, p1 = (next(line for line in out.splitlines() if line.lstrip("│ ").startswith(k)) for k in ("p0", "p1"))
    assert "done" in p0 and "failed" in p1  # a plain run charts its partitions too, the failed one up to where it got
    assert all("█" in line or "▌" in line for line in (p0, p1)) and " 50 " in p1

    code, out, _ = runs(capsys, "show", RUN_ID.format("shown"), "--attempt", "1", "--json")
    shown = orjson.loads(out)
    assert shown["run"]["attempt"] == 1 and shown["attempts"] == [2, 1]
    assert [(p["key"], p["read"], p["written"]) for p in shown["partitions"]] == [("p0", 100, 77), ("p1", 100, 77)]
    assert shown["run"]["dead_letters"] == "dead"

    code, _, err = runs(capsys, "show", "no-such-run")
    assert code == 1 and "no run 'no-such-run'" in err


def test_runs_last_exits_0_after_a_success_and_1_after_a_failure_or_no_run(
        history_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = runs(capsys, "last", "checked")
    assert code == 1 and "no runs of job 'checked'" in out

    run_job(job("checked"))
    code, out, _ = runs(capsys, "last", "checked")
    assert code == 0 and out.startswith("checked: succeeded") and "read 200, written 154, dead-lettered 26" in out

    run_job(job("checked", source={"fail_partition": "p0", "fail_at": 0}))
    code, out, _ = runs(capsys, "last", "checked")
    assert code == 1 and out.startswith("checked: failed") and "error: " in out


def test_every_run_of_the_real_cli_is_in_the_history(tmp_path: Path) -> None:
    """`sluice run` (plain and --staged) in processes of their own, then `sluice runs` reading them back."""
    (tmp_path / "job.yaml").write_text(f"""
job_name: cli_history
runtime: {{batch_size: 100}}
source: {{type: jsonl, path: "{ROOT / 'examples/data'}"}}
destination: {{type: jsonl, path: "out/date={{{{ ds }}}}"}}
dead_letter: {{type: jsonl, path: dead}}
""")
    sluice = str(Path(sys.executable).parent / "sluice")
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_HISTORY", "SLUICE_METRICS")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sluice, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)

    assert run("run", "job.yaml", "--ds", "2024-02-03").returncode == 0
    assert run("run", "job.yaml", "--ds", "2024-02-03", "--staged").returncode == 0
    last = run("runs", "last", "cli_history")
    assert last.returncode == 0 and "read 2,002, written 2,000, dead-lettered 2" in last.stdout
    listed = orjson.loads(run("runs", "--json").stdout)
    assert [(r["kind"], r["attempt"], r["read"], r["written"]) for r in listed] == [("staged", 2, 2002, 2000),
                                                                                     ("run", 1, 2002, 2000)]
    assert (tmp_path / ".sluice" / "history.db").exists()
