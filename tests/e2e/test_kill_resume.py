"""kill -9 of a real ``sluice run`` after its first durable checkpoint, then ``--resume``: every
record exactly once, for each shipped source/sink pair (ES → S3, S3 → ES).

A proxy slows the destination down, so the run is surely still going when it is killed."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

BUCKET = "sluice-kill"
N = 6000
SLUICE = str(Path(sys.executable).with_name("sluice"))


def logs(n: int) -> list[dict[str, Any]]:
    return [{"_id": f"d-{i:05d}", "n": i, "app": ("web", "api", "db")[i % 3], "msg": f"event {i} of {n}"}
            for i in range(n)]


def start(job: dict[str, Any], folder: Path, *extra: str) -> subprocess.Popen[bytes]:
    path = folder / "job.json"
    path.write_bytes(orjson.dumps(job))
    return subprocess.Popen([SLUICE, "run", str(path), "--ds", "2024-01-01", *extra], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_after_first_checkpoint(proc: subprocess.Popen[bytes], checkpoints: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        files = list(checkpoints.rglob("*.json"))
        if files and any(s.get("seq", -1) >= 0 for s in orjson.loads(files[0].read_bytes()).values()):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        assert proc.poll() is None, "the run ended before it could be killed: slow the destination down more"
        time.sleep(0.05)
    raise AssertionError("no checkpoint within 60 s")


def resume(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    result = subprocess.run([SLUICE, "run", str(folder / "job.json"), "--ds", "2024-01-01", "--resume"],
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["reconciled"] and summary["read"] < N, summary  # continued, did not start over
    return summary


@pytest.mark.slow
def test_es_to_s3_killed_then_resumed_writes_every_document_once(
        osmem_clone: Any, s3: Any, moto_url: str, fault_proxy: Any, tmp_path: Path) -> None:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[str(osmem_clone.url)])
    lines = [line for d in logs(N) for line in (orjson.dumps({"index": {"_index": "logs", "_id": d["_id"]}}),
                                                orjson.dumps({k: v for k, v in d.items() if k != "_id"}))]
    assert not client.bulk(body=b"\n".join(lines) + b"\n", params={"refresh": "true"})["errors"]
    client.close()
    s3.create_bucket(Bucket=BUCKET)
    slow = fault_proxy(moto_url)
    slow.add(method="PUT", path=r"/part-", delay_s=0.25, times=10_000)
    job = {"job_name": "kill_es_s3", "runtime": {"batch_size": 250, "max_in_flight_batches": 4},
           "source": {"type": "opensearch", "hosts": [str(osmem_clone.url)], "index": "logs", "slices": 2,
                      "pagination": "scroll", "page_size": 250},
           "destination": {"type": "s3", "uri": f"s3://{BUCKET}/out", "endpoint_url": slow.url,
                           "max_records_per_file": 500},
           "checkpoints": {"type": "local", "path": str(tmp_path / "checkpoints")}}
    kill_after_first_checkpoint(start(job, tmp_path), tmp_path / "checkpoints")
    resume(job, tmp_path)

    ids: list[str] = []
    parts: list[str] = []
    manifest: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="out/"):
        for o in page.get("Contents") or ():
            body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            if "/part-" in o["Key"]:
                parts.append(o["Key"])
                ids += [orjson.loads(line)["_id"] for line in gzip.decompress(body).splitlines()]
            elif o["Key"].endswith("_manifest.json"):
                manifest = orjson.loads(body)
    assert len(ids) == len(set(ids)) == N, "every document exactly once"
    assert manifest["records"] == N and sorted(f["key"] for f in manifest["files"]) == sorted(parts)


@pytest.mark.slow
def test_s3_to_es_killed_then_resumed_indexes_every_document_once(
        osmem_clone: Any, s3: Any, moto_url: str, fault_proxy: Any, tmp_path: Path) -> None:
    from opensearchpy import OpenSearch

    s3.create_bucket(Bucket=BUCKET)
    docs = logs(N)
    for f in range(12):
        s3.put_object(Bucket=BUCKET, Key=f"in/events-{f:02d}.jsonl",
                      Body=b"".join(orjson.dumps(d) + b"\n" for d in docs[f::12]))
    slow = fault_proxy(str(osmem_clone.url))
    slow.add(method="POST", path=r"/_bulk", delay_s=0.25, times=10_000)
    job = {"job_name": "kill_s3_es", "runtime": {"batch_size": 250, "max_workers": 2},
           "source": {"type": "s3", "uri": f"s3://{BUCKET}/in", "endpoint_url": moto_url, "keys_per_partition": 6},
           "destination": {"type": "opensearch", "hosts": [slow.url], "index": "restored", "id": "_id"},
           "checkpoints": {"type": "local", "path": str(tmp_path / "checkpoints")}}
    kill_after_first_checkpoint(start(job, tmp_path), tmp_path / "checkpoints")
    resume(job, tmp_path)

    client = OpenSearch(hosts=[str(osmem_clone.url)])
    client.indices.refresh(index="restored")
    assert client.count(index="restored")["count"] == N
    hits = client.search(index="restored", body={"size": N, "_source": ["n"]})["hits"]["hits"]
    assert sorted(h["_source"]["n"] for h in hits) == list(range(N))
    client.close()
