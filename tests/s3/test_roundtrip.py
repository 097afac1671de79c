"""jsonl → S3 → jsonl round trips: every compression, partition_by, rollover, idempotent re-runs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.testing import read_jsonl, run_job

from .helpers import BUCKET, FAST_RUNTIME, conn, keys, read_prefix

RUN = "s3_roundtrip-20240101T000000-20240102T000000"


def write_input(n: int, path: str = "in/data.jsonl", start: int = 0) -> list[dict[str, Any]]:
    records = [{"id": i, "app": f"app-{i % 3}", "@timestamp": f"2024-01-0{1 + i % 2}T12:00:00Z", "msg": "x" * (i % 7)}
               for i in range(start, start + n)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return records


def to_s3(url: str, **dest: Any) -> dict[str, Any]:
    return {
        "job_name": "s3_roundtrip",
        "runtime": {"batch_size": 100, **FAST_RUNTIME},
        "source": {"type": "jsonl", "path": "in"},
        "destination": {"type": "s3", "uri": f"s3://{BUCKET}/out", **conn(url), **dest},
    }


def from_s3(url: str, prefix: str, **src: Any) -> dict[str, Any]:
    return {
        "job_name": "s3_back",
        "runtime": {"batch_size": 64, **FAST_RUNTIME},
        "source": {"type": "s3", "uri": f"s3://{BUCKET}/{prefix}", **conn(url), **src},
        "destination": {"type": "jsonl", "path": "back"},
    }


@pytest.mark.parametrize(("compression", "ext"), [("gzip", ".jsonl.gz"), ("zstd", ".jsonl.zst"), ("none", ".jsonl")])
def test_round_trip_with_every_compression(s3: Any, bucket: str, moto_url: str, compression: str, ext: str) -> None:
    records = write_input(1000)
    summary = run_job(to_s3(moto_url, compression=compression))
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled and summary.written == 1000

    folder = f"out/date=2024-01-01/run_id={RUN}/"
    written = keys(s3, folder)
    parts = [k for k in written if "/part-" in k]
    assert parts and all(k.endswith(ext) for k in parts)
    assert f"{folder}_manifest.json" in written and f"{folder}_SUCCESS" in written

    back = run_job(from_s3(moto_url, "out"))
    assert back.status == "succeeded", back.error
    assert back.reconciled and back.read == 1000 and back.written == 1000
    assert Counter(r["id"] for r in read_jsonl("back")) == Counter(r["id"] for r in records)


def _parts(s3: Any, prefix: str = "out/") -> list[str]:
    return [k for k in keys(s3, prefix) if "/part-" in k]


def test_partition_by_event_date_writes_hive_folders(s3: Any, bucket: str, moto_url: str) -> None:
    records = write_input(600)
    records[0]["@timestamp"] = None  # no value: goes to the __missing__ folder, not lost
    Path("in/data.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    summary = run_job(to_s3(moto_url, partition_by={"field": "@timestamp", "format": "date", "name": "event_date"}))
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled and summary.written == 600

    folder = f"out/date=2024-01-01/run_id={RUN}/"
    by_folder = Counter(k[len(folder):].split("/")[0] for k in _parts(s3, folder))
    assert set(by_folder) == {"event_date=2024-01-01", "event_date=2024-01-02", "event_date=__missing__"}
    day1 = read_prefix(s3, f"{folder}event_date=2024-01-01/")
    day2 = read_prefix(s3, f"{folder}event_date=2024-01-02/")
    missing = read_prefix(s3, f"{folder}event_date=__missing__/")
    assert {r["@timestamp"][:10] for r in day1} == {"2024-01-01"}
    assert {r["@timestamp"][:10] for r in day2} == {"2024-01-02"}
    assert [r["id"] for r in missing] == [0]
    assert len(day1) + len(day2) + len(missing) == 600


def test_partition_by_missing_field_can_dead_letter(s3: Any, bucket: str, moto_url: str) -> None:
    write_input(50)
    job = to_s3(moto_url, partition_by={"field": "user.id", "missing": "dead_letter"})
    job["runtime"]["error_rate_threshold"] = 1.0
    summary = run_job(job)
    assert summary.status == "succeeded", summary.error
    assert summary.written == 0 and summary.dead_lettered == {"sink": 50} and summary.reconciled


def test_partition_by_a_plain_field_template_placement(s3: Any, bucket: str, moto_url: str) -> None:
    write_input(90)
    key = "{prefix}/{partition_by}/ds={{ ds }}/part-{partition}-{seq:05d}.jsonl.gz"
    summary = run_job(to_s3(moto_url, key=key, partition_by={"field": "app"}))
    assert summary.status == "succeeded", summary.error
    assert {k.split("/")[1] for k in _parts(s3)} == {"app=app-0", "app=app-1", "app=app-2"}
    # the manifest goes to the fixed part of the template and lists every file
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key="out/_manifest.json")["Body"].read())
    assert manifest["records"] == 90 and len(manifest["files"]) == 3


def test_rollover_by_records_and_manifest_counts(s3: Any, bucket: str, moto_url: str) -> None:
    write_input(1000)
    summary = run_job(to_s3(moto_url, max_records_per_file=250))
    assert summary.status == "succeeded", summary.error
    parts = _parts(s3)
    assert len(parts) == 4  # batches of 100: files close at the first batch boundary past 250 → 300 each
    folder = f"out/date=2024-01-01/run_id={RUN}/"
    assert [p.rsplit("/", 1)[1] for p in parts] == [f"part-data.jsonl-{s:05d}.jsonl.gz" for s in (0, 3, 6, 9)]
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key=f"{folder}_manifest.json")["Body"].read())
    assert manifest["records"] == 1000 and manifest["job"] == "s3_roundtrip" and manifest["run_id"] == RUN
    assert [f["key"] for f in manifest["files"]] == parts
    for entry in manifest["files"]:
        head = s3.head_object(Bucket=BUCKET, Key=entry["key"])
        assert entry["bytes"] == head["ContentLength"] and head["Metadata"]["records"] == str(entry["records"])
    assert s3.get_object(Bucket=BUCKET, Key=f"{folder}_SUCCESS")["Body"].read() == b""


def test_rollover_by_bytes(s3: Any, bucket: str, moto_url: str) -> None:
    write_input(1000)
    summary = run_job(to_s3(moto_url, compression="none", max_bytes_per_file=20_000))
    assert summary.status == "succeeded", summary.error
    parts = _parts(s3)
    assert len(parts) > 2
    assert sum(len(read_prefix(s3, p)) for p in parts) == 1000


def test_rerun_writes_identical_keys_and_object_count(s3: Any, bucket: str, moto_url: str) -> None:
    write_input(700)
    assert run_job(to_s3(moto_url, max_records_per_file=200)).status == "succeeded"
    first = {k: s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(s3, "out/")}
    assert run_job(to_s3(moto_url, max_records_per_file=200)).status == "succeeded"
    second = {k: s3.head_object(Bucket=BUCKET, Key=k)["ETag"] for k in keys(s3, "out/")}
    assert first == second
    assert len(read_prefix(s3, "out/")) == 700


def test_rerun_with_other_rollover_leaves_no_stale_files(s3: Any, bucket: str, moto_url: str) -> None:
    write_input(700)
    assert run_job(to_s3(moto_url, max_records_per_file=100)).status == "succeeded"
    assert len(_parts(s3)) == 7
    s3.put_object(Bucket=BUCKET, Key="out/other/keep-me.jsonl", Body=b"{}\n")  # not this run's: untouched
    assert run_job(to_s3(moto_url, max_records_per_file=1000)).status == "succeeded"
    assert len(_parts(s3)) == 1
    assert "out/other/keep-me.jsonl" in keys(s3, "out/")
    assert Counter(r["id"] for r in read_prefix(s3, "out/")) == Counter(range(700))
