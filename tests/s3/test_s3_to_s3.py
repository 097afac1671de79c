"""S3 → S3 jobs: re-compress and re-partition, resume with S3 checkpoints, dead letters and their replay."""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter
from typing import Any

import orjson

from sluice import SinkRun
from sluice.testing import build, make_context, read_jsonl, run_job

from .helpers import BUCKET, FAST_RUNTIME, conn, encode, keys, put_records, read_prefix, read_records

RUN = "s3_copy-20240101T000000-20240102T000000"
OUT = f"out/date=2024-01-01/run_id={RUN}/"


def copy_job(url: str, runtime: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
             **dest: Any) -> dict[str, Any]:
    return {
        "job_name": "s3_copy",
        "runtime": {"batch_size": 100, **FAST_RUNTIME, **(runtime or {})},
        "source": {"type": "s3", "uri": f"s3://{BUCKET}/raw", "glob": "**/*.jsonl.gz", **conn(url),
                   **(source or {})},
        "destination": {"type": "s3", "uri": f"s3://{BUCKET}/out", **conn(url), **dest},
        "dead_letter": {"type": "s3", "uri": f"s3://{BUCKET}/dead", **conn(url)},
        "checkpoints": {"type": "s3", "uri": f"s3://{BUCKET}/checkpoints", **conn(url)},
    }


def seed_raw(s3: Any, objects: int = 12, per_object: int = 50) -> Counter[tuple[int, int]]:
    for i in range(objects):
        put_records(s3, f"raw/2024/01/01/f{i:02d}.jsonl.gz",
                    [{"f": i, "n": j, "app": ["web", "api", "db"][j % 3]} for j in range(per_object)], "gzip")
    return Counter((i, j) for i in range(objects) for j in range(per_object))


def test_recompress_and_repartition(s3: Any, bucket: str, moto_url: str) -> None:
    expected = seed_raw(s3)
    summary = run_job(copy_job(moto_url, source={"keys_per_partition": 4}, compression="zstd",
                               partition_by={"field": "app"}))
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled and summary.read == summary.written == 600 and summary.partitions == 3
    parts = [k for k in keys(s3, OUT) if "/part-" in k]
    assert parts and all(k.endswith(".jsonl.zst") for k in parts)
    assert {k[len(OUT):].split("/")[0] for k in parts} == {"app=web", "app=api", "app=db"}
    for app in ("web", "api", "db"):
        assert {r["app"] for r in read_prefix(s3, f"{OUT}app={app}/")} == {app}
    assert Counter((r["f"], r["n"]) for r in read_prefix(s3, OUT)) == expected
    assert keys(s3, "dead/") == []  # no dead letters: no dead-letter files and no markers


def test_resume_s3_to_s3_with_s3_checkpoints_writes_every_record_once(s3: Any, bucket: str, moto_url: str,
                                                                      fault_proxy: Any) -> None:
    expected = seed_raw(s3, objects=20)
    proxy = fault_proxy(moto_url)
    proxy.add(method="GET", path=r"/raw/.*/f1[3-9]\.jsonl\.gz", status=503, times=10_000)
    job = copy_job(proxy.url, runtime={"max_workers": 2, "retry": {"attempts": 2, "initial_backoff_s": 0.01,
                                                                    "max_backoff_s": 0.01}},
                   source={"keys_per_partition": 5, "max_attempts": 1}, max_records_per_file=100)
    first = run_job(job)
    assert first.status == "failed" and "did not finish" in first.error
    assert keys(s3, "checkpoints/s3_copy/")  # progress was saved on S3
    assert not [k for k in keys(s3, OUT) if k.endswith("_SUCCESS")]

    proxy.clear()
    second = run_job(job, resume=True)
    assert second.status == "succeeded", second.error
    assert first.written + second.written == 1000
    assert Counter((r["f"], r["n"]) for r in read_prefix(s3, OUT)) == expected
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key=f"{OUT}_manifest.json")["Body"].read())
    assert manifest["records"] == 1000  # files of both attempts, counted from object metadata
    assert sorted(f["key"] for f in manifest["files"]) == [k for k in keys(s3, OUT) if "/part-" in k]
    assert s3.get_object(Bucket=BUCKET, Key=f"{OUT}_SUCCESS")["Body"].read() == b""


def test_dead_letters_go_to_s3_and_replay_with_the_s3_source(s3: Any, bucket: str, moto_url: str) -> None:
    good = [orjson.dumps({"n": i}) for i in range(97)]
    body = b"\n".join([*good[:40], b"{broken", b"[1]", b'"text"', *good[40:]]) + b"\n"
    s3.put_object(Bucket=BUCKET, Key="raw/a.jsonl.gz", Body=gzip.compress(body))
    summary = run_job(copy_job(moto_url, runtime={"error_rate_threshold": 0.5}))
    assert summary.status == "succeeded", summary.error
    assert summary.written == 97 and summary.dead_lettered == {"source": 3} and summary.reconciled

    dead_keys = keys(s3, "dead/")
    folder = f"dead/date=2024-01-01/run_id={RUN}/"
    assert [k for k in dead_keys if "/dead-letters-" in k] == [f"{folder}dead-letters-keys-00000-00000.jsonl.gz"]
    assert f"{folder}_dead_letters_manifest.json" in dead_keys and not any(k.endswith("_SUCCESS") for k in dead_keys)
    letters = read_records(s3, f"{folder}dead-letters-keys-00000-00000.jsonl.gz")
    assert [(d["context"]["key"], d["context"]["line"]) for d in letters] == [("raw/a.jsonl.gz", 41),
                                                                              ("raw/a.jsonl.gz", 42),
                                                                              ("raw/a.jsonl.gz", 43)]
    assert all(d["reason"] and d["stage"] == "source" and d["job"] == "s3_copy" for d in letters)

    replay = {
        "job_name": "s3_replay",
        "source": {"type": "s3", "uri": f"s3://{BUCKET}/dead", "glob": "**/dead-letters-*.jsonl.gz", **conn(moto_url)},
        "destination": {"type": "jsonl", "path": "replayed"},
    }
    back = run_job(replay)
    assert back.status == "succeeded", back.error
    assert back.read == 3 and back.reconciled
    assert sorted(r["record"] for r in read_jsonl("replayed")) == sorted(['"text"', "[1]", "{broken"])


def test_manifest_counts_a_multipart_file_of_an_earlier_attempt_by_reading_it(s3: Any, bucket: str,
                                                                              moto_url: str) -> None:
    ctx = make_context("s3_copy", **FAST_RUNTIME)
    ctx.resume = True
    key = f"{OUT}part-p-00000.jsonl"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    body = encode([{"n": i} for i in range(25)])
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=body)["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    sink = build("sink", {"type": "s3", "uri": f"s3://{BUCKET}/out", "compression": "none", **conn(moto_url)}, ctx)
    sink.commit(SinkRun(resume=True))
    sink.close()
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key=f"{OUT}_manifest.json")["Body"].read())
    (entry,) = manifest["files"]
    assert entry["key"] == key and entry["records"] == 25 and entry["bytes"] == len(body)
    assert entry["sha256"] == hashlib.sha256(body).hexdigest()
