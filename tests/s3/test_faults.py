"""Faults injected by a test-owned HTTP proxy in front of moto: retried, and the run reconciles.
Plus clear one-line errors for a down server, wrong credentials and access denied."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.testing import read_jsonl, run_job

from .helpers import BUCKET, FAST_RUNTIME, conn, keys, put_records, read_prefix

# botocore retries once itself, Sluice's policy retries the whole operation on top
ONE_RETRY = {"max_attempts": 2}


def write_input(n: int) -> None:
    Path("in").mkdir(exist_ok=True)
    Path("in/data.jsonl").write_bytes(b"".join(orjson.dumps({"id": i, "pad": "p" * 20}) + b"\n" for i in range(n)))


def to_s3(url: str, **dest: Any) -> dict[str, Any]:
    return {
        "job_name": "s3_faults",
        "runtime": {"batch_size": 100, **FAST_RUNTIME},
        "source": {"type": "jsonl", "path": "in"},
        "destination": {"type": "s3", "uri": f"s3://{BUCKET}/out", **conn(url), **ONE_RETRY, **dest},
    }


def from_s3(url: str, **src: Any) -> dict[str, Any]:
    return {
        "job_name": "s3_faults_read",
        "runtime": {"batch_size": 100, **FAST_RUNTIME},
        "source": {"type": "s3", "uri": f"s3://{BUCKET}/in", **conn(url), **ONE_RETRY, **src},
        "destination": {"type": "jsonl", "path": "out"},
    }


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 500}, {"drop": True}], ids=["503", "500", "drop"])
def test_put_faults_are_retried(s3: Any, bucket: str, moto_url: str, fault_proxy: Any, fault: dict[str, Any]) -> None:
    write_input(500)
    proxy = fault_proxy(moto_url)
    injected = proxy.add(method="PUT", path=r"/part-", times=5, **fault)
    summary = run_job(to_s3(proxy.url, max_records_per_file=100))
    assert summary.status == "succeeded", summary.error
    assert injected.fired == 5 and summary.retries >= 5
    assert summary.reconciled and summary.written == 500
    assert Counter(r["id"] for r in read_prefix(s3, "out/")) == Counter(range(500))


@pytest.mark.parametrize("prefetch", [4, 0], ids=["fetched-ahead", "streamed"])
@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 500}, {"drop": True}, {"truncate": True}],
                         ids=["503", "500", "drop", "truncate"])
def test_get_faults_are_retried(s3: Any, bucket: str, moto_url: str, fault_proxy: Any, fault: dict[str, Any],
                                prefetch: int) -> None:
    for i in range(6):
        put_records(s3, f"in/f{i}.jsonl.gz", [{"f": i, "n": j, "pad": "q" * 30} for j in range(300)], "gzip")
    proxy = fault_proxy(moto_url)
    injected = proxy.add(method="GET", path=r"/in/f\d\.jsonl\.gz", times=4, **fault)
    summary = run_job(from_s3(proxy.url, prefetch_objects=prefetch))
    assert summary.status == "succeeded", summary.error
    assert injected.fired == 4 and summary.retries >= 4
    assert summary.reconciled and summary.read == summary.written == 1800
    assert Counter((r["f"], r["n"]) for r in read_jsonl("out")) == Counter((i, j) for i in range(6) for j in range(300))


def test_a_dropped_connection_mid_object_resumes_with_a_range_request(s3: Any, bucket: str, moto_url: str,
                                                                      fault_proxy: Any) -> None:
    # plain and > 2 MiB, so the cut comes after whole 1 MiB reads (the re-open is below any decompressor)
    put_records(s3, "in/big.jsonl", [{"n": j, "pad": "r" * 60} for j in range(40_000)])
    proxy = fault_proxy(moto_url)
    proxy.add(method="GET", path=r"/in/big", truncate=True, times=1)
    ranges: list[str] = []

    def remember(status: int, headers: dict[str, str], body: bytes, data: bytes) -> tuple[int, dict[str, str], bytes]:
        ranges.append({k.lower(): v for k, v in headers.items()}.get("content-range", ""))
        return status, headers, data

    proxy.add(method="GET", path=r"/in/big", rewrite=remember, times=1)
    summary = run_job(from_s3(proxy.url, max_attempts=1, prefetch_objects=0))  # streamed, not fetched whole
    assert summary.status == "succeeded", summary.error
    assert summary.read == 40_000 and summary.reconciled
    assert ranges and ranges[0].startswith("bytes ") and not ranges[0].startswith("bytes 0-")
    assert [r["n"] for r in read_jsonl("out")] == list(range(40_000))


MULTIPART = {"compression": "none", "multipart_threshold": 5 << 20, "multipart_part_size": 5 << 20,
             "max_records_per_file": 10_000_000}


def big_input() -> int:
    Path("in").mkdir(exist_ok=True)
    pad = "m" * 1000
    n = 6000  # ~6 MiB: one part of 5 MiB and a last part
    Path("in/data.jsonl").write_bytes(b"".join(orjson.dumps({"id": i, "pad": pad}) + b"\n" for i in range(n)))
    return n


def test_multipart_upload_above_the_threshold(s3: Any, bucket: str, moto_url: str, fault_proxy: Any) -> None:
    n = big_input()
    proxy = fault_proxy(moto_url)
    summary = run_job(to_s3(proxy.url, **MULTIPART))
    assert summary.status == "succeeded", summary.error
    (part,) = [k for k in keys(s3, "out/") if "/part-" in k]
    head = s3.head_object(Bucket=BUCKET, Key=part)
    assert head["ETag"].strip('"').endswith("-2") and head["ContentLength"] > 5 << 20
    assert proxy.count("PUT", r"partNumber=") == 2 and proxy.count("POST", r"\?uploads") == 1
    assert [r["id"] for r in read_prefix(s3, "out/")] == list(range(n))
    manifest_key = part.rsplit("/", 1)[0] + "/_manifest.json"
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    assert manifest["files"][0]["records"] == n and manifest["files"][0]["bytes"] == head["ContentLength"]


@pytest.mark.parametrize("fault", [
    {"method": "POST", "path": r"\?uploads", "status": 503, "times": 2},
    {"method": "PUT", "path": r"partNumber=", "status": 500, "times": 3},
    {"method": "PUT", "path": r"partNumber=", "drop": True, "times": 2},
    {"method": "POST", "path": r"uploadId=", "status": 503, "times": 2},
    {"method": "POST", "path": r"uploadId=", "drop": True, "times": 1},
], ids=["create-503", "part-500", "part-drop", "complete-503", "complete-drop"])
def test_multipart_faults_are_retried(s3: Any, bucket: str, moto_url: str, fault_proxy: Any,
                                      fault: dict[str, Any]) -> None:
    n = big_input()
    proxy = fault_proxy(moto_url)
    injected = proxy.add(**fault)
    summary = run_job(to_s3(proxy.url, **MULTIPART))
    assert summary.status == "succeeded", summary.error
    assert injected.fired == fault["times"] and summary.retries >= fault["times"]
    assert summary.reconciled and summary.written == n
    assert [r["id"] for r in read_prefix(s3, "out/")] == list(range(n))
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


@pytest.mark.parametrize(("fault", "message"), [
    ({"method": "POST", "path": r"uploadId=", "status": 500}, "completing the multipart upload"),
    ({"method": "PUT", "path": r"partNumber=", "status": 500}, "uploading part"),
], ids=["complete", "part"])
def test_a_failed_run_aborts_its_multipart_uploads_and_writes_no_success(s3: Any, bucket: str, moto_url: str,
                                                                         fault_proxy: Any, fault: dict[str, Any],
                                                                         message: str) -> None:
    big_input()
    proxy = fault_proxy(moto_url)
    proxy.add(times=1000, **fault)  # never succeeds
    summary = run_job(to_s3(proxy.url, **MULTIPART))
    assert summary.status == "failed" and message in summary.error
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert not [k for k in keys(s3, "out/") if k.endswith(("_SUCCESS", "_manifest.json")) or "/part-" in k]


def test_a_down_server_is_a_clear_error(tmp_path: Path) -> None:
    write_input(10)
    summary = run_job(to_s3("http://127.0.0.1:9", max_attempts=1))
    assert summary.status == "failed"
    assert summary.error == "s3: opening bucket 'sluice-test' failed: cannot connect to http://127.0.0.1:9"


S3_ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message>'
            b"<RequestId>1</RequestId></Error>")


@pytest.mark.parametrize(("code", "expected"), [
    (b"InvalidAccessKeyId", "the access key id is not valid (check the credentials) (InvalidAccessKeyId)"),
    (b"SignatureDoesNotMatch", "the secret access key does not match (check the credentials) (SignatureDoesNotMatch)"),
    (b"AccessDenied", "access denied (check the IAM policy for this bucket/prefix) (AccessDenied)"),
])
def test_wrong_credentials_are_a_clear_error_without_the_secret(s3: Any, bucket: str, moto_url: str,
                                                                fault_proxy: Any, code: bytes, expected: str) -> None:
    put_records(s3, "in/a.jsonl", [{"n": 1}])
    proxy = fault_proxy(moto_url)
    proxy.add(status=403, body=S3_ERROR % (code, b"denied"), headers={"Content-Type": "application/xml"}, times=100)
    secret = "wJalrXUtnFEMI-very-secret-KEY"
    job = from_s3(proxy.url, access_key_id="AKIAEXAMPLE", secret_access_key=secret)
    summary = run_job(job)
    assert summary.status == "failed"
    assert summary.error == f"s3: listing s3://{BUCKET}/in/ at {proxy.url} failed: {expected}"
    assert secret not in summary.error and "AKIAEXAMPLE" not in summary.error
    assert proxy.count() == 1  # permanent: not retried
