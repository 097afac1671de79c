"""The S3 source and sink with `format:`: key extensions and manifests, hive output that pyarrow and
DuckDB read alike, ranged reads with projection, cut objects, resume inside a Parquet object."""

from __future__ import annotations

import gzip
import io
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from sluice import ConfigError, SinkRun
from sluice.testing import build, make_context, read_jsonl, run_job

from .helpers import BUCKET, FAST_RUNTIME, conn, decode, encode, events

RUN = "lake-20240101T000000-20240102T000000"


def write_input(records: list[dict[str, Any]]) -> None:
    Path("in").mkdir(exist_ok=True)
    Path("in/data.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def to_s3(url: str, **dest: Any) -> dict[str, Any]:
    return {"job_name": "lake", "runtime": {"batch_size": 100, **FAST_RUNTIME},
            "source": {"type": "file", "path": "in"},
            "destination": {"type": "s3", "uri": f"s3://{BUCKET}/lake", **conn(url), **dest}}


def keys(s3: Any, prefix: str) -> list[str]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents") or ()]
    return sorted(out)


def mirror(s3: Any, prefix: str, folder: Path) -> Path:
    """The objects under ``prefix`` as local files (DuckDB reads S3 only through an extension)."""
    for key in keys(s3, prefix):
        target = folder / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    return folder


@pytest.mark.parametrize(("fmt", "compression", "ext", "content_type"), [
    ("parquet", None, ".parquet", "application/vnd.apache.parquet"),
    ("csv", None, ".csv.gz", "application/gzip"),
    ("tsv", "none", ".tsv", "text/tab-separated-values"),
    ("jsonl", "zstd", ".jsonl.zst", "application/zstd"),
])
def test_keys_content_types_and_the_manifest_follow_the_format(
        s3: Any, bucket: str, moto_url: str, fmt: str, compression: str | None, ext: str, content_type: str) -> None:
    write_input(events(250))
    extra = {"compression": compression} if compression else {}
    summary = run_job(to_s3(moto_url, format=fmt, max_records_per_file=100, **extra))
    assert summary.status == "succeeded" and summary.written == 250, summary.error
    folder = f"lake/date=2024-01-01/run_id={RUN}/"
    parts = [k for k in keys(s3, folder) if "/part-" in k]
    assert [k[len(folder):] for k in parts] == [f"part-data.jsonl-{s:05d}{ext}" for s in (0, 1, 2)]
    assert s3.head_object(Bucket=BUCKET, Key=parts[0])["ContentType"] == content_type
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key=f"{folder}_manifest.json")["Body"].read())
    assert manifest["format"] == fmt and manifest["records"] == 250
    assert [f["records"] for f in manifest["files"]] == [100, 100, 50]


def test_parquet_refuses_container_compression_and_dead_letters_stay_json_lines(
        s3: Any, bucket: str, moto_url: str) -> None:
    block = {"type": "s3", "uri": f"s3://{BUCKET}/x", **conn(moto_url)}
    with pytest.raises(ConfigError, match="compression 'gzip' applies to text formats; parquet compresses inside"):
        build("sink", {**block, "format": "parquet", "compression": "gzip"})
    with pytest.raises(ConfigError, match="dead letters are stored as JSON Lines, not parquet"):
        build("sink", {**block, "format": "parquet"}, make_context().as_dead_letters())


def test_a_fresh_commit_counts_a_parquet_object_written_elsewhere_from_its_footer(
        s3: Any, bucket: str, moto_url: str) -> None:
    block = {"type": "s3", "uri": f"s3://{BUCKET}/lake", "format": "parquet", **conn(moto_url)}
    key = "lake/date=2024-01-01/run_id=test-20240101T000000-20240102T000000/part-p-00000.parquet"
    s3.put_object(Bucket=BUCKET, Key=key, Body=encode("parquet", events(42)))  # no metadata: as if multipart
    sink = build("sink", block)
    sink.commit(SinkRun(("p",)))
    sink.close()
    manifest = orjson.loads(s3.get_object(Bucket=BUCKET, Key=key.rsplit("/", 1)[0] + "/_manifest.json")["Body"].read())
    assert manifest["files"][0]["records"] == 42 and manifest["records"] == 42


def test_hive_partitioned_parquet_reads_the_same_in_pyarrow_duckdb_and_sluice(
        s3: Any, bucket: str, moto_url: str, tmp_path: Path) -> None:
    records = events(300)
    write_input(records)
    summary = run_job(to_s3(moto_url, format={"type": "parquet", "row_group_size": 50}, partition_by={"field": "app"}))
    assert summary.status == "succeeded", summary.error
    folder = f"lake/date=2024-01-01/run_id={RUN}/"
    assert {k[len(folder):].split("/")[0] for k in keys(s3, folder) if "/part-" in k} == {"app=web", "app=api",
                                                                                         "app=db"}
    local = mirror(s3, folder, tmp_path / "mirror")
    # the folder holds the partition column: the files do not, so no reader sees it twice
    one = next(local.rglob("*.parquet"))
    assert "app" not in pq.read_schema(one).names

    arrow = ds.dataset(local, format="parquet", partitioning="hive").to_table()
    duck = duckdb.sql(f"SELECT * FROM read_parquet('{local}/*/*.parquet', hive_partitioning = true)").arrow()
    duck = duck.read_all() if hasattr(duck, "read_all") else duck
    assert sorted(arrow.column_names) == sorted(duck.column_names) == sorted(records[0])
    for name in ("_id", "n", "latency", "ok", "msg", "app"):
        assert arrow.schema.field(name).type == duck.schema.field(name).type, name
    by_id = lambda t: sorted(t.to_pylist(), key=lambda r: r["_id"])  # noqa: E731
    assert by_id(arrow) == by_id(duck) == sorted(records, key=lambda r: r["_id"])

    back = run_job({"job_name": "back", "source": {"type": "s3", "uri": f"s3://{BUCKET}/{folder}", "format": "parquet",
                                                   **conn(moto_url)},
                    "destination": {"type": "file", "path": "back"}})
    assert back.status == "succeeded" and back.read == 300
    assert sorted(read_jsonl("back"), key=lambda r: r["_id"]) == sorted(records, key=lambda r: r["_id"])


def test_ranged_reads_fetch_only_the_projected_columns_row_group_by_row_group(
        s3: Any, bucket: str, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice_s3 import reader

    records = [{"n": i, "blob": f"{i:08d}" * 100} for i in range(4000)]  # ~800 KB of blobs, barely compressible
    body = encode({"type": "parquet", "row_group_size": 1000, "compression": "none", "dictionary": False}, records)
    s3.put_object(Bucket=BUCKET, Key="in/big.parquet", Body=body)
    fetched: list[tuple[int, int]] = []
    original = reader.RangedObject._get

    def spy(self: Any, start: int, end: int) -> bytes:
        fetched.append((start, end))
        return original(self, start, end)

    monkeypatch.setattr(reader.RangedObject, "_get", spy)
    source = build("source", {"type": "s3", "uri": f"s3://{BUCKET}/in", "prefetch_max_bytes": 0, **conn(moto_url),
                              "format": {"type": "parquet", "columns": ["n"]}}, make_context(batch_size=500))
    (partition,) = source.partitions()
    got = [r for b in source.read(partition) for r in b.records]
    source.close()
    assert got == [{"n": i} for i in range(4000)]
    assert sum(end - start for start, end in fetched) < len(body) / 5  # the blobs were never fetched
    assert max(end - start for start, end in fetched) < len(body) / 4  # no read of the whole object
    assert len(fetched) >= 4  # the footer, then each row group on its own


def test_a_cut_parquet_object_fails_naming_the_key_or_becomes_one_dead_letter(
        s3: Any, bucket: str, moto_url: str) -> None:
    body = encode("parquet", events(50))
    s3.put_object(Bucket=BUCKET, Key="in/a.parquet", Body=encode("parquet", events(20)))
    s3.put_object(Bucket=BUCKET, Key="in/b.parquet", Body=body[: len(body) - 100])
    job = {"job_name": "cut", "runtime": {"error_rate_threshold": 1, **FAST_RUNTIME},
           "source": {"type": "s3", "uri": f"s3://{BUCKET}/in", "format": "parquet", **conn(moto_url)},
           "destination": {"type": "file", "path": "out"}, "dead_letter": {"type": "file", "path": "dead"}}
    failed = run_job(job)
    assert failed.status == "failed" and failed.written == 20
    assert f"s3://{BUCKET}/in/b.parquet is corrupt or truncated after row group 0, offset 0 (parquet)" in failed.error
    job["source"]["on_corrupt_object"] = "dead_letter"
    passed = run_job(job)
    assert passed.status == "succeeded" and passed.written == 20 and passed.dead_lettered == {"source": 1}
    (dead,) = read_jsonl("dead")
    assert dead["error_type"] == "CorruptObject"
    assert dead["context"] == {"bucket": BUCKET, "key": "in/b.parquet", "row_group": 0, "offset": 0}


def test_resume_inside_a_parquet_object_delivers_every_record_once(s3: Any, bucket: str, moto_url: str,
                                                                   fault_proxy: Any) -> None:
    records = events(2000)
    s3.put_object(Bucket=BUCKET, Key="in/one.parquet", Body=encode({"type": "parquet", "row_group_size": 300}, records))
    proxy = fault_proxy(moto_url)
    proxy.add(method="PUT", path=r"/out/.*-0000[7-9]\.jsonl\.gz", status=500, times=10_000)  # from batch 7 on
    job = {"job_name": "pq_resume",
           "runtime": {"batch_size": 100, "retry": {"attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.01}},
           "source": {"type": "s3", "uri": f"s3://{BUCKET}/in", "format": "parquet", "prefetch_max_bytes": 0,
                      **conn(moto_url)},
           "destination": {"type": "s3", "uri": f"s3://{BUCKET}/out", "max_records_per_file": 100, "max_attempts": 1,
                           **conn(proxy.url)},
           "checkpoints": {"type": "local", "path": "cp"}}
    first = run_job(job)
    assert first.status == "failed" and first.written == 700
    saved = orjson.loads(next(Path("cp").rglob("*.json")).read_bytes())
    assert saved["keys-00000"]["position"] == {"key": "in/one.parquet", "row_group": 2, "offset": 100}
    proxy.clear()
    second = run_job(job, resume=True)
    assert second.status == "succeeded" and second.read == 1300, second.error
    got = Counter()
    for key in keys(s3, "out/"):
        if "/part-" in key:
            body = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            got.update(orjson.loads(line)["n"] for line in body.splitlines())
    assert got == Counter(range(2000))


def test_csv_through_s3_round_trips_with_declared_types(s3: Any, bucket: str, moto_url: str) -> None:
    records = events(500)
    write_input(records)
    fmt = {"type": "csv", "types": {"n": "int", "latency": "float", "ok": "bool"}}
    out = run_job(to_s3(moto_url, format=fmt, compression="zstd", max_records_per_file=200))
    assert out.status == "succeeded", out.error
    folder = f"lake/date=2024-01-01/run_id={RUN}/"
    first = next(k for k in keys(s3, folder) if k.endswith(".csv.zst"))
    text = decode({"type": "csv"}, s3.get_object(Bucket=BUCKET, Key=first)["Body"].read(), first)
    assert text[0]["n"] == "0" and text[0]["msg"] == records[0]["msg"]  # untyped: text, newlines kept
    back = run_job({"job_name": "back", "source": {"type": "s3", "uri": f"s3://{BUCKET}/{folder}", "format": fmt,
                                                   **conn(moto_url)},
                    "destination": {"type": "file", "path": "back"}})
    assert back.status == "succeeded" and back.read == 500
    assert sorted(read_jsonl("back"), key=lambda r: r["n"]) == records


def test_a_bad_csv_row_on_s3_is_a_dead_letter_with_bucket_key_and_line(s3: Any, bucket: str, moto_url: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="in/a.csv", Body=b"n,v\n1,a\n2\n3,c\n")
    summary = run_job({"job_name": "bad", "runtime": {"error_rate_threshold": 1},
                       "source": {"type": "s3", "uri": f"s3://{BUCKET}/in", "format": "csv", **conn(moto_url)},
                       "destination": {"type": "file", "path": "out"}, "dead_letter": {"type": "file", "path": "dead"}})
    assert summary.status == "succeeded" and summary.written == 2
    (dead,) = read_jsonl("dead")
    assert dead["context"] == {"bucket": BUCKET, "key": "in/a.csv", "line": 3, "fields": 1}


def test_parquet_from_moto_reads_with_pyarrow_as_written(s3: Any, bucket: str, moto_url: str) -> None:
    write_input(events(120))
    summary = run_job(to_s3(moto_url, format={"type": "parquet", "compression": "snappy"}))
    assert summary.status == "succeeded"
    (key,) = [k for k in keys(s3, "lake/") if k.endswith(".parquet")]
    t = pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
    assert t.schema.field("ok").type == pa.bool_() and t.num_rows == 120
    assert pq.ParquetFile(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())).metadata.row_group(
        0).column(0).compression == "SNAPPY"
