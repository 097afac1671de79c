"""Sink behaviours not covered by the job-level tests: restarted partitions, clear errors, uploads."""

from __future__ import annotations

from typing import Any

import pytest

from sluice import Batch, PermanentError, SinkRun
from sluice.testing import build, make_context

from .helpers import BUCKET, FAST_RUNTIME, conn, keys, put_records

OUT = "out/date=2024-01-01/run_id=test-20240101T000000-20240102T000000/"


def test_a_partition_restarted_at_a_batch_drops_files_started_from_it(s3: Any, bucket: str, moto_url: str) -> None:
    for seq in (0, 2, 5):  # an earlier attempt wrote these; its checkpoint was at batch 2
        put_records(s3, f"{OUT}part-p-{seq:05d}.jsonl", [{"seq": seq}])
    put_records(s3, f"{OUT}part-other-00009.jsonl", [{"seq": 9}])
    ctx = make_context(**FAST_RUNTIME)
    ctx.resume = True
    sink = build("sink", {"type": "s3", "uri": f"s3://{BUCKET}/out", "compression": "none", **conn(moto_url)}, ctx)
    try:
        sink.start_partition("p", 3)
        assert keys(s3, OUT) == [f"{OUT}part-other-00009.jsonl", f"{OUT}part-p-00000.jsonl", f"{OUT}part-p-00002.jsonl"]
        sink.write(Batch([{"seq": 3}], "p", 3, None))
        sink.finish_partition("p")
        sink.commit(SinkRun(("p", "other"), resume=True))
    finally:
        sink.close()
    assert keys(s3, OUT) == [f"{OUT}_SUCCESS", f"{OUT}_manifest.json", f"{OUT}part-other-00009.jsonl",
                             f"{OUT}part-p-00000.jsonl", f"{OUT}part-p-00002.jsonl", f"{OUT}part-p-00003.jsonl"]


def test_writing_to_a_missing_bucket_is_a_clear_error(s3: Any, moto_url: str) -> None:
    with pytest.raises(PermanentError, match=r"^s3: opening bucket 'nope-bucket' at .* failed: bucket does not exist"):
        build("sink", {"type": "s3", "uri": "s3://nope-bucket/out", **conn(moto_url)})


def test_a_failed_write_discards_the_partition_so_a_retry_cannot_duplicate(s3: Any, bucket: str, moto_url: str,
                                                                           fault_proxy: Any) -> None:
    proxy = fault_proxy(moto_url)
    ctx = make_context(**FAST_RUNTIME)
    sink = build("sink", {"type": "s3", "uri": f"s3://{BUCKET}/out", "max_records_per_file": 2, "max_attempts": 1,
                          **conn(proxy.url)}, ctx)
    proxy.add(method="PUT", path=r"/part-", status=500, times=100)
    try:
        with pytest.raises(PermanentError, match=r"writing partition 'p' failed: s3: writing s3://.*part-p-00000"):
            sink.write(Batch([{"n": 1}, {"n": 2}], "p", 0, None))
        proxy.clear()
        assert sink.write(Batch([{"n": 3}], "p", 1, None)).written == 1  # starts afresh: nothing of batch 0 kept
        sink.finish_partition("p")
    finally:
        sink.close()
    assert keys(s3, "out/") == [f"{OUT}part-p-00001.jsonl.gz"]


def test_multipart_uploads_left_by_a_killed_run_are_aborted_at_prepare(s3: Any, bucket: str, moto_url: str) -> None:
    s3.create_multipart_upload(Bucket=BUCKET, Key=f"{OUT}part-p-00004.jsonl.gz")
    s3.create_multipart_upload(Bucket=BUCKET, Key="out/elsewhere/big.bin")  # not this run's: left alone
    sink = build("sink", {"type": "s3", "uri": f"s3://{BUCKET}/out", **conn(moto_url)}, make_context(**FAST_RUNTIME))
    try:
        sink.prepare(SinkRun())
    finally:
        sink.close()
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])] == ["out/elsewhere/big.bin"]


def test_max_open_files_closes_the_oldest_folder_file(s3: Any, bucket: str, moto_url: str) -> None:
    sink = build("sink", {"type": "s3", "uri": f"s3://{BUCKET}/out", "compression": "none", "max_open_files": 2,
                          "partition_by": {"field": "k"}, **conn(moto_url)}, make_context(**FAST_RUNTIME))
    try:
        assert not sink.write(Batch([{"k": "a"}, {"k": "b"}], "p", 0, None)).durable
        assert not sink.write(Batch([{"k": "c"}, {"k": "b"}], "p", 1, None)).durable  # closes k=a (opened first)
        assert sink.write(Batch([{"k": "a"}], "p", 2, None)).written == 1  # a new file for k=a, at seq 2
        sink.finish_partition("p")
        sink.commit(SinkRun(("p",)))
    finally:
        sink.close()
    assert [k[len(OUT):] for k in keys(s3, OUT) if "/part-" in k] == [
        "k=a/part-p-00000.jsonl", "k=a/part-p-00002.jsonl", "k=b/part-p-00000.jsonl", "k=c/part-p-00001.jsonl"]
