"""The S3 source: listing, filters, partitions, bad input, clear errors, resume mid-prefix."""

from __future__ import annotations

import gzip
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from sluice import PermanentError
from sluice.testing import build, make_context, read_jsonl, run_job

from .helpers import BUCKET, FAST_RUNTIME, conn, encode, put_records, seed_many


def job(url: str, uri: str = f"s3://{BUCKET}/in", runtime: dict[str, Any] | None = None, **src: Any) -> dict[str, Any]:
    return {
        "job_name": "s3_read",
        "runtime": {"batch_size": 50, **FAST_RUNTIME, **(runtime or {})},
        "source": {"type": "s3", "uri": uri, **conn(url), **src},
        "destination": {"type": "jsonl", "path": "out"},
    }


def source(url: str, **block: Any) -> Any:
    return build("source", {"type": "s3", "uri": f"s3://{BUCKET}/in", **conn(url), **block},
                 make_context(batch_size=50, **FAST_RUNTIME))


def test_lists_more_than_1000_keys_in_pages_and_partitions(s3: Any, bucket: str, moto_url: str) -> None:
    # every 8th key is data, the rest is skipped by the glob: the listing crosses two page boundaries
    seed_many(BUCKET, ((f"in/{i // 100:02d}/k{i:05d}.{'jsonl' if i % 8 == 0 else 'txt'}", b'{"i": %d}\n' % i)
                       for i in range(2100)))
    src = source(moto_url, keys_per_partition=100, glob="**/*.jsonl")
    partitions = src.partitions()
    assert [p.spec["objects"] for p in partitions] == [100, 100, 63]
    assert all(set(p.spec) == {"start_after", "last_key", "objects", "bytes"} for p in partitions)  # no key lists

    summary = run_job(job(moto_url, keys_per_partition=100, glob="**/*.jsonl"))
    assert summary.status == "succeeded", summary.error
    assert summary.read == summary.written == 263 and summary.partitions == 3
    assert Counter(r["i"] for r in read_jsonl("out")) == Counter(range(0, 2100, 8))


def test_glob_selects_keys_relative_to_the_prefix(s3: Any, bucket: str, moto_url: str) -> None:
    put_records(s3, "in/a.jsonl.gz", [{"k": "a"}], "gzip")
    put_records(s3, "in/x/b.jsonl.gz", [{"k": "b"}], "gzip")
    put_records(s3, "in/x/y/c.jsonl.gz", [{"k": "c"}], "gzip")
    put_records(s3, "in/x/d.jsonl", [{"k": "d"}])
    put_records(s3, "inside/e.jsonl.gz", [{"k": "e"}], "gzip")  # shares the prefix text, not the folder
    pick = {glob: sorted(r["k"] for p in source(moto_url, glob=glob).partitions()
                         for b in source(moto_url, glob=glob).read(p) for r in b.records)
            for glob in ("**/*.jsonl.gz", "*.jsonl.gz", "x/*", "x/**")}
    assert pick == {"**/*.jsonl.gz": ["a", "b", "c"], "*.jsonl.gz": ["a"], "x/*": ["b", "d"], "x/**": ["b", "c", "d"]}


def test_modified_since_and_until_filter_objects(s3: Any, bucket: str, moto_url: str) -> None:
    put_records(s3, "in/a.jsonl", [{"k": "a"}])
    now = datetime.now(UTC)
    ahead, behind = (now + timedelta(hours=1)).isoformat(), (now - timedelta(hours=1)).isoformat()
    assert len(source(moto_url, modified_since=behind, modified_until=ahead).partitions()) == 1
    assert source(moto_url, modified_since=ahead).partitions() == []
    assert source(moto_url, modified_until=behind).partitions() == []


def test_modified_since_is_templated(s3: Any, bucket: str, moto_url: str) -> None:
    put_records(s3, "in/a.jsonl", [{"k": "a"}])
    # the interval is 2024-01-01: the object (modified now) is after its end
    summary = run_job(job(moto_url, modified_since="{{ data_interval_start }}",
                          modified_until="{{ data_interval_end }}"))
    assert summary.status == "succeeded" and summary.read == 0


def test_skips_markers_and_manifests_by_default(s3: Any, bucket: str, moto_url: str) -> None:
    put_records(s3, "in/part-0.jsonl", [{"k": 1}])
    s3.put_object(Bucket=BUCKET, Key="in/_SUCCESS", Body=b"")
    s3.put_object(Bucket=BUCKET, Key="in/_manifest.json", Body=b'{"files": []}')
    s3.put_object(Bucket=BUCKET, Key="in/folder/", Body=b"")
    assert run_job(job(moto_url)).read == 1


def test_malformed_lines_become_dead_letters_with_bucket_key_and_line(s3: Any, bucket: str, moto_url: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="in/bad.jsonl.gz",
                  Body=gzip.compress(b'{"ok": 1}\n{not json\n\n[1, 2]\n{"ok": 2}\n'))
    summary = run_job(job(moto_url, runtime={"error_rate_threshold": 1.0}))
    assert summary.status == "succeeded", summary.error
    assert summary.read == 4 and summary.written == 2 and summary.dead_lettered == {"source": 2}
    assert summary.reconciled
    dead = read_jsonl(".sluice/dead_letters/s3_read/s3_read-20240101T000000-20240102T000000")
    assert sorted((d["context"]["key"], d["context"]["line"], d["context"]["bucket"]) for d in dead) == [
        ("in/bad.jsonl.gz", 2, BUCKET), ("in/bad.jsonl.gz", 4, BUCKET)]
    assert all(d["stage"] == "source" and d["plugin"] == "s3" and d["reason"] for d in dead)


@pytest.mark.parametrize(("compression", "ext"), [("gzip", ".gz"), ("zstd", ".zst")])
def test_a_truncated_object_fails_naming_the_key_after_delivering_what_came_before(
        s3: Any, bucket: str, moto_url: str, compression: str, ext: str) -> None:
    whole = encode([{"n": i, "pad": f"{i:x}" * 20} for i in range(20_000)], compression)
    s3.put_object(Bucket=BUCKET, Key=f"in/a-good.jsonl{ext}", Body=encode([{"n": -1}], compression))
    s3.put_object(Bucket=BUCKET, Key=f"in/b-cut.jsonl{ext}", Body=whole[: len(whole) // 2])
    summary = run_job(job(moto_url, runtime={"batch_size": 5000}))
    assert summary.status == "failed"
    assert f"s3://sluice-test/in/b-cut.jsonl{ext} is corrupt or truncated after line" in summary.error
    assert 1 < summary.read < 20_001  # the good object and the whole lines before the damage were delivered
    assert summary.written == summary.read


@pytest.mark.parametrize(("compression", "ext"), [("gzip", ".gz"), ("zstd", ".zst")])
def test_a_truncated_object_can_be_dead_lettered_and_the_run_goes_on(s3: Any, bucket: str, moto_url: str,
                                                                     compression: str, ext: str) -> None:
    whole = encode([{"n": i, "pad": f"{i:x}" * 20} for i in range(20_000)], compression)
    s3.put_object(Bucket=BUCKET, Key=f"in/a-cut.jsonl{ext}", Body=whole[: len(whole) // 2])
    put_records(s3, "in/b-good.jsonl", [{"n": -1}])
    summary = run_job(job(moto_url, on_corrupt_object="dead_letter", runtime={"error_rate_threshold": 1.0}))
    assert summary.status == "succeeded", summary.error
    assert summary.dead_lettered == {"source": 1} and summary.reconciled
    delivered = [r["n"] for r in read_jsonl("out")]
    assert -1 in delivered and 0 < len(delivered) - 1 < 20_000
    assert sorted(n for n in delivered if n >= 0) == list(range(len(delivered) - 1))  # a clean prefix


def test_an_empty_object_yields_no_records_and_no_error(s3: Any, bucket: str, moto_url: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="in/empty.jsonl", Body=b"")
    s3.put_object(Bucket=BUCKET, Key="in/empty.jsonl.gz", Body=gzip.compress(b""))
    summary = run_job(job(moto_url))
    assert summary.status == "succeeded", summary.error
    assert summary.read == 0 and summary.partitions == 1


def test_a_missing_bucket_is_a_clear_error(s3: Any, moto_url: str) -> None:
    summary = run_job(job(moto_url, uri="s3://no-such-bucket/in"))
    assert summary.status == "failed"
    assert summary.error.startswith("s3: listing s3://no-such-bucket/in/")
    assert "bucket does not exist" in summary.error and moto_url in summary.error
    with pytest.raises(PermanentError, match="no-such-bucket"):
        build("source", {"type": "s3", "uri": "s3://no-such-bucket/x", **conn(moto_url)}).partitions()


def test_resume_after_a_failure_mid_prefix_reads_every_record_once(s3: Any, bucket: str, moto_url: str,
                                                                   fault_proxy: Any) -> None:
    for i in range(30):
        put_records(s3, f"in/f{i:02d}.jsonl.gz", [{"f": i, "n": j} for j in range(40)], "gzip")
    proxy = fault_proxy(moto_url)
    # every GET of the objects from f12 on fails (persistently): the first attempt dies mid-prefix
    proxy.add(method="GET", path=r"/in/f(1[2-9]|2\d)\.jsonl\.gz", status=500, times=10_000)
    cfg = job(proxy.url, keys_per_partition=10, max_attempts=1,
              runtime={"max_workers": 1, "retry": {"attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.01}})
    cfg["destination"]["max_records_per_file"] = 40
    first = run_job(cfg)
    assert first.status == "failed" and "in/f12.jsonl.gz" in first.error
    assert 0 < first.written < 1200

    proxy.clear()
    second = run_job(cfg, resume=True)
    assert second.status == "succeeded", second.error
    assert first.written + second.written == 1200
    got = Counter((r["f"], r["n"]) for r in read_jsonl("out"))
    assert got == Counter((i, j) for i in range(30) for j in range(40))


def test_resume_continues_inside_a_half_read_object(s3: Any, bucket: str, moto_url: str) -> None:
    put_records(s3, "in/a.jsonl", [{"n": i} for i in range(100)])
    put_records(s3, "in/b.jsonl", [{"n": 100 + i} for i in range(100)])
    src = source(moto_url)
    (p,) = src.partitions()
    batches = list(src.read(p))
    assert [b.checkpoint for b in batches] == [{"key": "in/a.jsonl", "line": 50},
                                               {"key": "in/a.jsonl", "line": 100, "done": True},
                                               {"key": "in/b.jsonl", "line": 50},
                                               {"key": "in/b.jsonl", "line": 100, "done": True}]
    rest = [r["n"] for b in src.read(p, {"key": "in/a.jsonl", "line": 70}) for r in b.records]
    assert rest == list(range(70, 200))
    orjson.dumps(batches[0].checkpoint)


def test_resume_refuses_a_checkpoint_outside_the_partition_range(s3: Any, bucket: str, moto_url: str) -> None:
    put_records(s3, "in/b.jsonl", [{"n": 1}])
    src = source(moto_url)
    (p,) = src.partitions()
    with pytest.raises(PermanentError, match="outside its key range now: the listing changed"):
        list(src.read(p, {"key": "in/c.jsonl", "line": 1}))


def test_resume_refuses_a_changed_keys_per_partition(s3: Any, bucket: str, moto_url: str, fault_proxy: Any) -> None:
    for i in range(30):
        put_records(s3, f"in/f{i:02d}.jsonl.gz", [{"f": i, "n": j} for j in range(40)], "gzip")
    proxy = fault_proxy(moto_url)
    proxy.add(method="GET", path=r"/in/f(1[2-9]|2\d)\.jsonl\.gz", status=500, times=10_000)
    cfg = job(proxy.url, keys_per_partition=10, max_attempts=1,
              runtime={"max_workers": 1, "retry": {"attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.01}})
    first = run_job(cfg)
    assert first.status == "failed" and 0 < first.written < 1200
    proxy.clear()
    cfg["source"]["keys_per_partition"] = 7  # the same keys-0000N names now cover other key ranges
    second = run_job(cfg, resume=True)
    assert second.status == "failed" and second.read == 0
    assert "partitioning changed" in second.error and "partitions that now mean other work: keys-00000" \
        in second.error
