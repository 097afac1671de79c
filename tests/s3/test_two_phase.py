"""The S3 sink's two-phase contract in detail: what start_partition replaces, what commit prunes and
publishes from a fresh instance, what abort withdraws, and what open, prepare and close leave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice import Batch, SinkRun, TransientError
from sluice.testing import build, make_context
from sluice.testing.conformance import commit_run, write_partitions

from .helpers import BUCKET, FAST_RUNTIME, conn, keys, put_records, read_prefix

OUT = "out/date=2024-01-01/run_id=test-20240101T000000-20240102T000000/"
MULTIPART = {"multipart_threshold": 5 << 20, "multipart_part_size": 5 << 20}


def sink_block(url: str, **options: Any) -> dict[str, Any]:
    return {"type": "s3", "uri": f"s3://{BUCKET}/out", "compression": "none", **conn(url), **options}


def numbered(n: int, start: int = 0, **fields: Any) -> list[dict[str, Any]]:
    return [{"n": i, **fields} for i in range(start, start + n)]


def files_of(s3: Any, partition: str) -> list[str]:
    """Data keys of one partition (any hive folder), relative to the run's folder."""
    return [k[len(OUT):] for k in keys(s3, OUT) if Path(k).name.rsplit("-", 1)[0] == f"part-{partition}"]


def etags(s3: Any, names: list[str]) -> dict[str, str]:
    return {n: s3.head_object(Bucket=BUCKET, Key=OUT + n)["ETag"] for n in names}


def manifest(s3: Any) -> dict[str, Any]:
    return orjson.loads(s3.get_object(Bucket=BUCKET, Key=f"{OUT}_manifest.json")["Body"].read())


def markers(s3: Any) -> list[str]:
    return [k[len(OUT):] for k in keys(s3, OUT) if Path(k).name in ("_SUCCESS", "_manifest.json")]


# -- start_partition ---------------------------------------------------------------------------
def test_a_partition_written_again_replaces_exactly_its_files(s3: Any, bucket: str, moto_url: str) -> None:
    # batches of 10, files of 20: p rolls over into files at batches 0, 2, 4; "p-2" looks like a file of p
    write_partitions(sink_block(moto_url, max_records_per_file=20), [("p", numbered(50)), ("p-2", numbered(30))])
    assert files_of(s3, "p") == ["part-p-00000.jsonl", "part-p-00002.jsonl", "part-p-00004.jsonl"]
    before = etags(s3, files_of(s3, "p-2"))
    assert len(before) == 2

    write_partitions(sink_block(moto_url, max_records_per_file=100), [("p", numbered(15, 100))])  # other rollover

    assert files_of(s3, "p") == ["part-p-00000.jsonl"]
    assert etags(s3, files_of(s3, "p-2")) == before, "another partition's files are untouched"
    assert sorted(r["n"] for r in read_prefix(s3, OUT)) == [*range(30), *range(100, 115)]


def test_a_partition_written_again_replaces_its_files_in_every_hive_folder(s3: Any, bucket: str,
                                                                           moto_url: str) -> None:
    block = sink_block(moto_url, partition_by={"field": "k"})
    write_partitions(block, [("p", numbered(10, k="a") + numbered(10, 10, k="b")), ("q", numbered(5, 50, k="b"))])
    assert files_of(s3, "p") == ["k=a/part-p-00000.jsonl", "k=b/part-p-00001.jsonl"]

    write_partitions(block, [("p", numbered(10, 20, k="a"))])  # this time p has no record for k=b

    assert files_of(s3, "p") == ["k=a/part-p-00000.jsonl"]
    assert files_of(s3, "q") == ["k=b/part-q-00000.jsonl"]
    assert sorted(r["n"] for r in read_prefix(s3, OUT)) == [*range(20, 30), *range(50, 55)]


def test_without_overwrite_a_partition_still_replaces_its_files_but_commit_prunes_nothing(
        s3: Any, bucket: str, moto_url: str) -> None:
    for name in ("part-p-00000.jsonl", "part-p-00002.jsonl", "part-q-00000.jsonl"):
        put_records(s3, OUT + name, [{"n": name}])
    sink = build("sink", sink_block(moto_url, overwrite=False), make_context(**FAST_RUNTIME))
    try:
        sink.start_partition("p", 0)
        sink.write(Batch([{"n": "new"}], "p", 0, None))
        sink.finish_partition("p")
        sink.commit(SinkRun(("p",)))
    finally:
        sink.close()
    assert files_of(s3, "p") == ["part-p-00000.jsonl"]  # 00002 would duplicate what p writes again
    assert files_of(s3, "q") == ["part-q-00000.jsonl"], "commit prunes nothing without overwrite"
    assert sorted(str(r["n"]) for r in read_prefix(s3, OUT)) == ["new", "part-q-00000.jsonl"]


def test_start_partition_called_again_after_a_failed_delete_deletes_again(s3: Any, bucket: str, moto_url: str,
                                                                          fault_proxy: Any) -> None:
    write_partitions(sink_block(moto_url, max_records_per_file=10), [("p", numbered(30))])
    proxy = fault_proxy(moto_url)
    sink = build("sink", sink_block(proxy.url, max_attempts=1), make_context(**FAST_RUNTIME))
    try:
        proxy.add(method="POST", path=r"\?delete", status=500, times=100)
        with pytest.raises(TransientError, match="deleting old output"):
            sink.start_partition("p", 1)
        proxy.clear()
        sink.start_partition("p", 1)  # the engine retries a failed start
    finally:
        sink.close()
    assert files_of(s3, "p") == ["part-p-00000.jsonl"]


# -- open and prepare ----------------------------------------------------------------------------
def test_open_and_prepare_of_a_fresh_run_delete_nothing(s3: Any, bucket: str, moto_url: str) -> None:
    block = sink_block(moto_url)
    write_partitions(block, [("p", numbered(10))])
    commit_run(block, ["p"], [])
    published = keys(s3, OUT)
    assert markers(s3) == ["_SUCCESS", "_manifest.json"]

    sink = build("sink", block, make_context(**FAST_RUNTIME))  # a fresh run (not --resume): plan re-run alone
    try:
        sink.prepare(SinkRun())
    finally:
        sink.close()
    assert keys(s3, OUT) == published


def test_the_dead_letter_role_comes_from_the_context(s3: Any, bucket: str, moto_url: str) -> None:
    sink = build("sink", sink_block(moto_url), make_context(**FAST_RUNTIME).as_dead_letters())
    try:
        sink.start_partition("p", 0)
        sink.write(Batch([{"n": 1}], "p", 0, None))
        sink.finish_partition("p")
        sink.commit(SinkRun(("p",)))
    finally:
        sink.close()
    assert [k[len(OUT):] for k in keys(s3, OUT)] == ["_dead_letters_manifest.json", "dead-letters-p-00000.jsonl"]


def test_dead_letters_written_again_as_none_withdraw_the_earlier_manifest(s3: Any, bucket: str,
                                                                         moto_url: str) -> None:
    put_records(s3, f"{OUT}dead-letters-p-00000.jsonl", [{"reason": "earlier attempt"}])
    s3.put_object(Bucket=BUCKET, Key=f"{OUT}_dead_letters_manifest.json", Body=b"{}")
    sink = build("sink", sink_block(moto_url), make_context(**FAST_RUNTIME).as_dead_letters())
    try:
        sink.start_partition("p", 0)
        sink.finish_partition("p")
        sink.commit(SinkRun(("p",)))
    finally:
        sink.close()
    assert keys(s3, OUT) == []


# -- commit --------------------------------------------------------------------------------------
def test_commit_removes_partitions_the_run_no_longer_has_and_nothing_else(s3: Any, bucket: str,
                                                                         moto_url: str) -> None:
    block = sink_block(moto_url, partition_by={"field": "k"})
    write_partitions(block, [("p", numbered(10, k="a")), ("q", numbered(10, 10, k="a"))])
    s3.put_object(Bucket=BUCKET, Key=f"{OUT}notes.txt", Body=b"not a file of the layout")
    s3.put_object(Bucket=BUCKET, Key="out/other/keep-me.jsonl", Body=b"{}\n")

    commit_run(block, ["p"], [])

    assert files_of(s3, "p") == ["k=a/part-p-00000.jsonl"] and files_of(s3, "q") == []
    assert f"{OUT}notes.txt" in keys(s3, OUT) and keys(s3, "out/other/") == ["out/other/keep-me.jsonl"]
    assert [f["key"] for f in manifest(s3)["files"]] == [f"{OUT}k=a/part-p-00000.jsonl"]
    assert manifest(s3)["records"] == 10


def test_commit_without_the_runs_partitions_removes_nothing(s3: Any, bucket: str, moto_url: str) -> None:
    block = sink_block(moto_url)
    write_partitions(block, [("p", numbered(10)), ("q", numbered(10))])
    sink = build("sink", block, make_context(**FAST_RUNTIME))
    try:
        sink.commit(SinkRun(None))
    finally:
        sink.close()
    assert manifest(s3)["records"] == 20 and files_of(s3, "q") == ["part-q-00000.jsonl"]


def test_commit_from_a_fresh_instance_builds_the_manifest_of_a_single_instance_run(s3: Any, bucket: str,
                                                                                  moto_url: str) -> None:
    block = sink_block(moto_url, max_records_per_file=5000, **MULTIPART)
    pad = "m" * 1100  # big: a file of 5000 records (5.6 MB, multipart), then one of 1000 (one PUT)
    parts = [("big", numbered(6000, pad=pad)), ("small", numbered(30, 9000))]
    sink = build("sink", block, make_context(**FAST_RUNTIME))
    try:
        sink.prepare(SinkRun())
        for partition, records in parts:
            sink.start_partition(partition, 0)
            for seq, start in enumerate(range(0, len(records), 500)):
                sink.write(Batch(records[start:start + 500], partition, seq, None))
            sink.finish_partition(partition)
        sink.commit(SinkRun(("big", "small"), (sink.report(),)))
    finally:
        sink.close()
    single = manifest(s3)
    assert [f["etag"].endswith("-2") for f in single["files"]] == [True, False, False], "one multipart file"
    s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": f"{OUT}_manifest.json"}, {"Key": f"{OUT}_SUCCESS"}]})

    commit_run(block, ["big", "small"], [{}])  # finalize in another process: knows nothing of the files

    assert manifest(s3) == single
    assert single["records"] == 6030 and markers(s3) == ["_SUCCESS", "_manifest.json"]


# -- abort and close -----------------------------------------------------------------------------
def test_abort_withdraws_the_success_marker_and_manifest(s3: Any, bucket: str, moto_url: str) -> None:
    block = sink_block(moto_url)
    write_partitions(block, [("p", numbered(10)), ("q", numbered(10))])
    commit_run(block, ["p", "q"], [])
    assert markers(s3) == ["_SUCCESS", "_manifest.json"]

    sink = build("sink", block, make_context(**FAST_RUNTIME))  # a re-run that replaces p, then fails
    try:
        sink.start_partition("p", 0)
        sink.write(Batch(numbered(3, 100), "p", 0, None))
        sink.abort(SinkRun(("p", "q")))
    finally:
        sink.close()

    assert markers(s3) == []
    assert files_of(s3, "p") == [] and files_of(s3, "q") == ["part-q-00000.jsonl"]


def test_close_aborts_unfinished_multipart_uploads(s3: Any, bucket: str, moto_url: str) -> None:
    sink = build("sink", sink_block(moto_url, **MULTIPART), make_context(**FAST_RUNTIME))
    try:
        sink.start_partition("p", 0)
        records = numbered(6000, pad="m" * 1000)
        for seq, start in enumerate(range(0, len(records), 500)):
            sink.write(Batch(records[start:start + 500], "p", seq, None))  # never finished
        assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])] == [
            f"{OUT}part-p-00000.jsonl"]
    finally:
        sink.close()
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert keys(s3, "out/") == []
