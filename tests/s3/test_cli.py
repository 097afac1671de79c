"""The ``sluice`` command runs a jsonl → S3 job end to end (a separate process, real moto)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

from .helpers import BUCKET, keys, read_prefix

SLUICE = str(Path(sys.executable).with_name("sluice"))


def test_cli_runs_a_jsonl_to_s3_job(s3: Any, bucket: str, moto_url: str) -> None:
    Path("in").mkdir()
    Path("in/a.jsonl").write_bytes(b"".join(orjson.dumps({"n": i}) + b"\n" for i in range(300)))
    job = {
        "job_name": "cli_to_s3",
        "source": {"type": "jsonl", "path": "in"},
        "destination": {"type": "s3", "uri": f"s3://{BUCKET}/cli", "endpoint_url": "{{ env.S3_ENDPOINT }}",
                        "access_key_id": "{{ secret('CLI_KEY_ID') }}",
                        "secret_access_key": "{{ secret('CLI_SECRET') }}"},
    }
    Path("job.yaml").write_text(yaml.safe_dump(job))
    env = {**os.environ, "S3_ENDPOINT": moto_url, "CLI_KEY_ID": "testing", "CLI_SECRET": "cli-secret-value"}
    proc = subprocess.run([SLUICE, "run", "job.yaml", "--ds", "2024-03-05", "--summary-json", "summary.json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = orjson.loads(Path("summary.json").read_bytes())
    assert summary["status"] == "succeeded" and summary["written"] == 300 and summary["reconciled"]
    folder = "cli/date=2024-03-05/run_id=cli_to_s3-20240305T000000-20240306T000000/"
    assert f"{folder}_SUCCESS" in keys(s3, "cli/")
    assert sorted(r["n"] for r in read_prefix(s3, folder)) == list(range(300))
    assert "cli-secret-value" not in proc.stdout + proc.stderr


def test_cli_reports_a_missing_bucket_in_one_line(s3: Any, moto_url: str) -> None:
    Path("in").mkdir()
    Path("in/a.jsonl").write_bytes(b'{"n": 1}\n')
    job = {"job_name": "cli_to_s3", "source": {"type": "jsonl", "path": "in"},
           "destination": {"type": "s3", "uri": "s3://missing-bucket/x", "endpoint_url": moto_url}}
    Path("job.yaml").write_text(yaml.safe_dump(job))
    proc = subprocess.run([SLUICE, "run", "job.yaml", "--ds", "2024-03-05", "--log-level", "ERROR"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "s3: opening bucket 'missing-bucket' at " + moto_url + " failed: bucket does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
