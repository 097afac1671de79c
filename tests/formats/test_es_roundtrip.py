"""Elasticsearch/OpenSearch → S3 Parquet → a new index: every document back, with its id and types."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.testing import run_job

from .helpers import BUCKET, FAST_RUNTIME, conn, decode

RUN = "es_lake-20240101T000000-20240102T000000"


def documents(n: int) -> list[dict[str, Any]]:
    return [{"_id": f"d-{i:04d}", "n": i, "app": ("web", "api", "db")[i % 3], "latency_ms": i * 1.25,
             "user": {"id": i % 17, "name": f"user {i % 17}"}, "tags": ["x", "y"][: i % 3],
             "@timestamp": f"2024-01-0{1 + i % 2}T{i % 24:02d}:00:00Z"} for i in range(n)]


def load(url: str, index: str, docs: list[dict[str, Any]]) -> None:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    lines = [line for d in docs for line in (orjson.dumps({"index": {"_index": index, "_id": d["_id"]}}),
                                             orjson.dumps({k: v for k, v in d.items() if k != "_id"}))]
    assert not client.bulk(body=b"\n".join(lines) + b"\n", params={"refresh": "true"})["errors"]
    client.close()


def fetch(url: str, index: str) -> dict[str, dict[str, Any]]:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"size": 10_000, "query": {"match_all": {}}})["hits"]["hits"]
    client.close()
    return {h["_id"]: h["_source"] for h in hits}


def test_es_to_s3_parquet_and_back_to_a_new_index(osmem_clone: Any, s3: Any, bucket: str, moto_url: str) -> None:
    url = str(osmem_clone.url)
    docs = documents(900)
    load(url, "logs", docs)
    out = run_job({"job_name": "es_lake", "runtime": {"batch_size": 200, **FAST_RUNTIME},
                   "source": {"type": "opensearch", "hosts": [url], "index": "logs", "slices": 2,
                              "pagination": "scroll"},
                   "destination": {"type": "s3", "uri": f"s3://{BUCKET}/lake", **conn(moto_url),
                                   "format": {"type": "parquet", "row_group_size": 128},
                                   "partition_by": {"field": "@timestamp", "format": "date", "name": "day"}}})
    assert out.status == "succeeded" and out.written == 900 and out.reconciled, out.error

    folder = f"lake/date=2024-01-01/run_id={RUN}/"
    parts = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=folder)["Contents"] if "/part-" in o["Key"]]
    assert parts and all(k.endswith(".parquet") and "/day=2024-01-0" in k for k in parts)
    schema = pq.read_schema(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=parts[0])["Body"].read()))
    assert schema.field("n").type == pa.int64() and schema.field("latency_ms").type == pa.float64()
    assert schema.field("user").type == pa.struct([("id", pa.int64()), ("name", pa.string())])
    assert sum(len(decode("parquet", s3.get_object(Bucket=BUCKET, Key=k)["Body"].read())) for k in parts) == 900

    back = run_job({"job_name": "lake_es", "runtime": {"batch_size": 250, **FAST_RUNTIME},
                    "source": {"type": "s3", "uri": f"s3://{BUCKET}/{folder}", "format": "parquet",
                               **conn(moto_url)},
                    "destination": {"type": "opensearch", "hosts": [url], "index": "copy"}})
    assert back.status == "succeeded" and back.written == 900 and back.reconciled, back.error
    assert fetch(url, "copy") == {d["_id"]: {k: v for k, v in d.items() if k != "_id"} for d in docs}
