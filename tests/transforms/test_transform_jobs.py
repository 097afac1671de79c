"""Transforms through the engine: the seed filter, the showcase job, process pools, stateful steps,
a user's own transform package, and light imports."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice import ConfigError
from sluice.testing import load_test_job, read_jsonl, run_job

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples/data"
VENV_BIN = Path(sys.executable).parent


def events() -> list[dict[str, Any]]:
    out = []
    for f in sorted(DATA.glob("*.jsonl.gz")):
        for line in gzip.open(f, "rt"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def job(tmp_path: Path, steps: list[dict[str, Any]], **transform: Any) -> dict[str, Any]:
    return {
        "job_name": "tr",
        "runtime": {"batch_size": 200, "max_workers": 2},
        "source": {"type": "jsonl", "path": str(DATA)},
        "transform": {"steps": steps, **transform},
        "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
    }


def test_seed_filter_expression_through_a_run(tmp_path: Path) -> None:
    summary = run_job(job(tmp_path, [{"type": "filter", "where": "record.get('app') == 'frontend'"}]))
    expected = sum(1 for e in events() if e["app"] == "frontend")
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled
    assert summary.read == 2002 and summary.dead_lettered == {"source": 2}
    assert summary.written == expected == 414
    assert summary.filtered == {"steps[0]:filter": 2000 - expected}
    assert {r["app"] for r in read_jsonl(tmp_path / "out")} == {"frontend"}


def test_late_templates_are_rendered_per_record_with_job_variables(tmp_path: Path) -> None:
    summary = run_job(job(tmp_path, [{"type": "set", "fields": {"id": "{{ record.host }}-{{ ds }}"}}]), ds="2024-02-03")
    assert summary.status == "succeeded", summary.error
    assert all(r["id"] == f"{r['host']}-2024-02-03" for r in read_jsonl(tmp_path / "out"))


def test_showcase_job_runs_and_reconciles(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "examples/jobs/transforms_showcase.yaml").read_text())
    config["source"]["path"] = str(DATA)
    config["destination"]["path"] = str(tmp_path / "out")
    config["dead_letter"]["path"] = str(tmp_path / "dead")
    summary = run_job(config)
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled
    kept = [e for e in events() if e["level"] in ("WARN", "ERROR") or e["latency_ms"] > 500]
    assert summary.filtered["steps[0]:filter"] == 2000 - len(kept)
    out = read_jsonl(tmp_path / "out")
    assert len(out) == summary.written and 0.35 * len(kept) < len(out) < 0.65 * len(kept)
    first = out[0]
    assert set(first) == {"timestamp", "source", "level", "latency_ms", "latency_s", "slow", "service",
                          "event_id", "day"}
    assert first["day"] == "2024-01-01" and first["timestamp"].endswith("Z")
    again = run_job({**config, "destination": {"type": "jsonl", "path": str(tmp_path / "again")}})
    assert again.written == summary.written
    assert sorted(r["event_id"] for r in read_jsonl(tmp_path / "again")) == sorted(r["event_id"] for r in out)


STATELESS = [
    {"type": "filter", "where": "record.level != 'INFO'"},
    {"type": "cast", "fields": {"latency_ms": "float"}},
    {"type": "set", "fields": {"latency_s": "record.latency_ms / 1000", "id": "{{ record.host }}-{{ ds }}"}},
    {"type": "python", "callable": "transforms.userfuncs:tag", "options": {"label": "pooled"}},
    {"type": "select", "fields": ["app", "level", "latency_s", "id", "label"]},
]


def test_stateless_steps_run_in_a_process_pool(tmp_path: Path) -> None:
    threaded = run_job(job(tmp_path / "t", STATELESS))
    pooled = run_job(job(tmp_path / "p", STATELESS, processes=2))
    assert pooled.status == "succeeded", pooled.error
    assert pooled.reconciled
    assert (pooled.written, pooled.filtered) == (threaded.written, threaded.filtered)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    pooled_out = read_jsonl(tmp_path / "p/out")
    assert sorted(map(key, pooled_out)) == sorted(map(key, read_jsonl(tmp_path / "t/out")))
    assert pooled_out and {r["label"] for r in pooled_out} == {"pooled"}


def test_the_process_pool_runs_steps_in_other_processes(tmp_path: Path) -> None:
    import os

    summary = run_job(job(tmp_path, [{"type": "python", "callable": "transforms.userfuncs:stamp_pid"}], processes=2))
    assert summary.status == "succeeded", summary.error
    pids = {r["pid"] for r in read_jsonl(tmp_path / "out")}
    assert pids and os.getpid() not in pids and len(pids) <= 2


def test_stateful_steps_are_refused_in_a_process_pool(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"steps\[1\] \(type: dedup\) keeps state"):
        load_test_job(job(tmp_path, [STATELESS[0], {"type": "dedup", "keys": ["host"]}], processes=2))


@pytest.mark.parametrize("emit", ["run", "partition"])
def test_aggregate_through_a_run_accounts_for_consumed_records(tmp_path: Path, emit: str) -> None:
    steps = [{"type": "aggregate", "group_by": ["app"], "emit": emit,
              "metrics": {"n": {"op": "count"}, "avg_ms": {"op": "avg", "field": "latency_ms"},
                          "max_ms": {"op": "max", "field": "latency_ms"}}}]
    summary = run_job(job(tmp_path, steps))
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled
    out = read_jsonl(tmp_path / "out")
    groups = 5 if emit == "run" else 10
    assert summary.created == summary.written == len(out) == groups
    assert summary.filtered == {"steps[0]:aggregate": 2000}
    assert sum(r["n"] for r in out) == 2000


def test_dedup_over_the_run_through_the_engine(tmp_path: Path) -> None:
    summary = run_job(job(tmp_path, [{"type": "dedup", "keys": ["host", "app"], "window": "exact"}]))
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled
    out = read_jsonl(tmp_path / "out")
    assert len(out) == len({(e["host"], e["app"]) for e in events()}) == 60
    # scope run holds every record until the run ends: all count as filtered, the survivors as created
    assert summary.filtered == {"steps[0]:dedup": 2000} and summary.created == 60


def test_a_transform_from_a_users_own_package_is_picked_up_by_type(tmp_path: Path) -> None:
    summary = run_job(job(tmp_path, [{"type": "redact", "fields": ["host", "message"]}]))
    assert summary.status == "succeeded", summary.error
    out = read_jsonl(tmp_path / "out")
    assert len(out) == 2000 and {r["host"] for r in out} == {"***"} and {r["message"] for r in out} == {"***"}
    proc = subprocess.run([str(VENV_BIN / "sluice"), "plugins", "--json"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    plugins = {p["distribution"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert "redact" in plugins["sluice-example"]["types"]["transform"]


def test_plugin_entry_point_imports_no_client_library() -> None:
    code = ("import sys, sluice_transforms.plugin as p; p.sluice_transforms(); "
            "heavy = [m for m in ('httpx', 'boto3', 'botocore', 'elasticsearch', 'opensearchpy', 'airflow') "
            "if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
