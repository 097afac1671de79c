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


def test_what_a_component_sees_does_not_import_the_job_loader() -> None:
    import subprocess
    import sys

    code = ("import sys, sluice.context, sluice.components\n"
            "assert 'sluice.config' not in sys.modules and 'yaml' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_plugin_author_imports_everything_from_sluice_and_shipped_plugins_are_typed() -> None:
    from pathlib import Path

    import sluice
    from sluice import RetryPolicy, RunContext, Sink, SinkRun, WriteResult, is_transient, retry_call

    assert all(getattr(sluice, name) is not None for name in sluice.__all__)
    assert RunContext.__module__ == "sluice.context" and RetryPolicy().attempts >= 1
    assert callable(retry_call) and callable(is_transient) and Sink and SinkRun and WriteResult
    root = Path(__file__).resolve().parents[2]
    untyped = [str(p.relative_to(root)) for folder in ("plugins", "core/src/sluice/builtin", "examples")
               for p in (root / folder).rglob("*.py") if "ctx: Any" in p.read_text()]
    assert untyped == [], f"components take ctx: RunContext, not Any: {untyped}"
