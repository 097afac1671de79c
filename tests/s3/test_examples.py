"""The example jobs run as shipped, against moto (bucket and endpoint from the environment)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sluice.testing import run_job

from .helpers import BUCKET, keys, read_prefix

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch, bucket: str, moto_url: str) -> None:
    monkeypatch.setenv("SLUICE_BUCKET", bucket)
    monkeypatch.setenv("S3_ENDPOINT_URL", moto_url)
    shutil.copytree(EXAMPLES / "data", "examples/data")


def test_jsonl_to_s3_example(s3: Any, example_env: None) -> None:
    summary = run_job(EXAMPLES / "jobs/jsonl_to_s3.yaml")
    assert summary.status == "succeeded", summary.error
    assert summary.written > 0 and summary.reconciled
    assert len(read_prefix(s3, "events/date=2024-01-01/")) == summary.written


def test_s3_recompress_example(s3: Any, example_env: None) -> None:
    for f in sorted(Path("examples/data").glob("*.jsonl.gz")):
        s3.put_object(Bucket=BUCKET, Key=f"raw/2024/{f.name}", Body=f.read_bytes())
    today = datetime.now(UTC).date().isoformat()  # the objects were modified today: today's interval reads them
    summary = run_job(EXAMPLES / "jobs/s3_recompress.yaml", ds=today)
    assert summary.status == "succeeded", summary.error
    assert summary.read > 0 and summary.reconciled
    parts = [k for k in keys(s3, "curated/") if "/part-" in k]
    assert parts and all(k.endswith(".jsonl.zst") and "/event_date=" in k for k in parts)
    assert len(read_prefix(s3, "curated/")) == summary.written
