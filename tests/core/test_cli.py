"""The ``sluice`` command: exit codes, clean errors, validate, plugins, schema, dry runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
SLUICE = str(Path(sys.executable).parent / "sluice")


def sluice(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SLUICE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=120)


def write_job(path: Path, source: str, dest: str = "out", extra: str = "") -> Path:
    path.write_text(f"""
job_name: cli_job
runtime: {{batch_size: 100}}
source: {{type: jsonl, path: "{source}"}}
destination: {{type: jsonl, path: "{dest}/date={{{{ ds }}}}"}}
dead_letter: {{type: jsonl, path: dead}}
{extra}
""")
    return path


def test_run_succeeds_with_exit_0_and_prints_a_reconciled_summary(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"))
    result = sluice("run", str(job), "--ds", "2024-02-03")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["reconciled"] is True
    assert (summary["read"], summary["written"], summary["dead_lettered"]) == (2002, 2000, {"source": 2})
    assert (tmp_path / "out/date=2024-02-03/_SUCCESS").exists()


def test_logs_are_json_lines_when_not_on_a_terminal(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"), extra="checkpoints: {type: local}")
    sluice("run", str(job), "--ds", "2024-02-03")
    result = sluice("run", str(job), "--ds", "2024-02-03", "--resume", "--log-json")
    assert result.returncode == 0
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "resuming" and e["done"] == 2 for e in events)
    assert orjson.loads(result.stdout.splitlines()[-1])["read"] == 0  # both partitions were already done


def test_a_failed_job_exits_1_with_one_clear_line_and_no_secret(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "/nonexistent/{{ secret('CLI_TOKEN') }}")
    result = sluice("run", str(job), env={"CLI_TOKEN": "tok-9f8e7d6c"})
    assert result.returncode == 1
    assert "error: job 'cli_job' failed: jsonl source: no such file or directory: /nonexistent/***" in result.stderr
    assert "tok-9f8e7d6c" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_bad_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "x", extra="runtime2: {}\ntransform: {steps: [{type: nope}]}")
    result = sluice("run", str(job))
    assert result.returncode == 2
    assert "error: job 'cli_job': runtime2: Extra inputs are not permitted" in result.stderr


def test_bad_yaml_exits_2_without_a_traceback(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("job_name: [unclosed\n")
    result = sluice("run", str(job))
    assert result.returncode == 2 and f"error: {job}: line" in result.stderr and "Traceback" not in result.stderr


def test_validate_lists_every_error_of_every_file_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    good = write_job(tmp_path / "jobs/good.yaml", "in")
    bad = tmp_path / "jobs/bad.yaml"
    bad.write_text("job_name: bad\nsource: {type: jsnl}\ndestination: {type: jsonl, path: o, compresion: gzip}\n")
    result = sluice("validate", str(tmp_path / "jobs"))
    assert result.returncode == 2
    assert f"ok  {good}" in result.stdout
    assert f"{bad}: job 'bad': source: unknown source type 'jsnl'. Did you mean 'jsonl'?" in result.stderr
    assert f"{bad}: job 'bad': destination (type: jsonl): compresion: Extra inputs are not permitted" in result.stderr
    assert "1 of 2 job file(s) invalid" in result.stderr
    assert sluice("validate", str(good)).returncode == 0


def test_validate_does_not_need_secrets(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", "{{ secret('UNSET_IN_CI') }}")
    assert sluice("validate", str(job)).returncode == 0


def test_plugins_lists_installed_plugins_with_versions_and_types() -> None:
    result = sluice("plugins", "--json")
    assert result.returncode == 0, result.stdout
    plugins = {p["name"]: p for p in orjson.loads(result.stdout)["plugins"]}
    assert plugins["sluice"]["types"]["source"] == ["jsonl"] and plugins["sluice"]["version"] == "0.1.0"
    assert plugins["sluice-example"]["types"] == {"transform": ["redact"]}


def test_schema_describes_every_component_and_validates_real_job_files(tmp_path: Path) -> None:
    import jsonschema
    import yaml

    result = sluice("schema", "-o", str(tmp_path / "schema.json"))
    assert result.returncode == 0
    schema = orjson.loads((tmp_path / "schema.json").read_bytes())
    assert "source.jsonl" in schema["$defs"] and "transform.redact" in schema["$defs"]
    jsonschema.validate(yaml.safe_load((ROOT / "examples/jobs/local_jsonl.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"job_name": "x", "source": {"type": "jsonl", "path": "a", "nope": 1},
                             "destination": {"type": "jsonl", "path": "b"}}, schema)


def test_dry_run_reads_one_batch_and_writes_nothing(tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", str(ROOT / "examples/data"),
                    extra="transform: {steps: [{type: redact, fields: [host]}]}")
    result = sluice("run", str(job), "--dry-run")
    assert result.returncode == 0, result.stderr
    out = orjson.loads(result.stdout)
    assert out["partitions"] == 2 and out["read"] == 100 and out["sample"][0]["host"] == "***"
    assert not (tmp_path / "out").exists()


def test_interval_flags() -> None:
    result = sluice("run", "nofile.yaml", "--start", "2024-01-01T00:00:00Z")
    assert result.returncode == 2 and "--start and --end go together" in result.stderr
    result = sluice("run", "nofile.yaml", "--ds", "yesterday")
    assert result.returncode == 2 and "--ds 'yesterday' is not a date" in result.stderr
