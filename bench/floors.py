"""The floors: plain sequential scripts doing each job with the same clients, as a competent
engineer would write them in an afternoon. Run as ``python -m bench.floors NAME ...``; each writes
``{"docs": N, "work_s": S}`` to the report file, timing only the data movement."""

from __future__ import annotations

import argparse
import gzip
import io
import time
import zlib
from pathlib import Path
from typing import Any

import orjson


def _os(url: str) -> Any:
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=[url], timeout=120)


def _s3(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def _scroll(client: Any, index: str) -> Any:
    resp = client.search(index=index, scroll="5m", size=1000, body={"sort": ["_doc"]})
    scroll_id = resp["_scroll_id"]
    try:
        while resp["hits"]["hits"]:
            yield resp["hits"]["hits"]
            resp = client.scroll(scroll_id=scroll_id, scroll="5m")
            scroll_id = resp["_scroll_id"]
    finally:
        client.clear_scroll(scroll_id=scroll_id)


def es_to_s3(a: argparse.Namespace) -> tuple[int, float]:
    """scroll → orjson → gzip → put_object, one object, sequentially."""
    t0 = time.monotonic()  # like Sluice's run time, the clock includes making the clients
    es, s3 = _os(a.es), _s3(a.s3)
    out = io.BytesIO()
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    n = 0
    for hits in _scroll(es, a.index):
        out.write(gz.compress(b"".join(orjson.dumps(h["_source"]) + b"\n" for h in hits)))
        n += len(hits)
    out.write(gz.flush())
    s3.put_object(Bucket=a.bucket, Key=f"{a.prefix}/part-00000.jsonl.gz", Body=out.getvalue())
    return n, time.monotonic() - t0


def s3_to_es(a: argparse.Namespace) -> tuple[int, float]:
    """helpers.bulk of the same documents, already in memory (read before the clock starts)."""
    from opensearchpy import helpers

    es, s3 = _os(a.es), _s3(a.s3)
    docs = []
    for obj in s3.list_objects_v2(Bucket=a.bucket, Prefix=a.prefix).get("Contents", []):
        body = gzip.decompress(s3.get_object(Bucket=a.bucket, Key=obj["Key"])["Body"].read())
        docs.extend(orjson.loads(line) for line in body.splitlines() if line)
    actions = [{"_index": a.index, "_id": d.pop("_id"), "_source": d} for d in docs]
    t0 = time.monotonic()
    ok, _ = helpers.bulk(es, actions, chunk_size=2000, max_chunk_bytes=10 * 1024 * 1024)
    return ok, time.monotonic() - t0


def es_to_es(a: argparse.Namespace) -> tuple[int, float]:
    """scroll → the same transforms in Python → helpers.bulk, sequentially."""
    from opensearchpy import helpers

    t0 = time.monotonic()
    es = _os(a.es)

    def actions() -> Any:
        for hits in _scroll(es, a.index):
            for h in hits:
                doc = h["_source"]
                if doc.get("level") == "DEBUG":
                    continue
                doc["service"] = doc.pop("app")
                try:
                    doc["latency_ms"] = int(doc["latency_ms"])
                except (TypeError, ValueError):
                    continue
                yield {"_index": a.dest, "_id": h["_id"], "_source": doc}

    ok, _ = helpers.bulk(es, actions(), chunk_size=2000, max_chunk_bytes=10 * 1024 * 1024)
    return ok, time.monotonic() - t0


def s3_to_s3(a: argparse.Namespace) -> tuple[int, float]:
    """list → get → gunzip → zstd → put, object by object."""
    import zstandard

    t0 = time.monotonic()
    s3 = _s3(a.s3)
    n = 0
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            raw = gzip.decompress(s3.get_object(Bucket=a.bucket, Key=obj["Key"])["Body"].read())
            n += raw.count(b"\n")
            key = f"{a.dest}/{obj['Key'].rsplit('/', 1)[-1].replace('.gz', '.zst')}"
            s3.put_object(Bucket=a.bucket, Key=key, Body=zstandard.ZstdCompressor(level=3).compress(raw))
    return n, time.monotonic() - t0


def http_source(a: argparse.Namespace) -> tuple[int, float]:
    """GET page after page of each account with one httpx client, orjson → a JSON Lines file."""
    import httpx

    t0 = time.monotonic()
    n = 0
    with httpx.Client(timeout=30) as client, open(a.out, "wb") as out:
        for account in a.accounts.split(","):
            page = 1
            while True:
                response = client.get(f"{a.api}/accounts/{account}/events",
                                      params={"page": page, "per_page": a.per_page})
                response.raise_for_status()
                data = orjson.loads(response.content)["data"]
                out.write(b"".join(orjson.dumps(r) + b"\n" for r in data))
                n += len(data)
                if len(data) < a.per_page:
                    break
                page += 1
    return n, time.monotonic() - t0


def http_sink(a: argparse.Namespace) -> tuple[int, float]:
    """Read the JSON Lines files and POST them as JSON arrays of ``per_page`` records, one after another."""
    import httpx

    t0 = time.monotonic()
    n = 0
    with httpx.Client(timeout=30) as client:
        for path in sorted(Path(a.data).glob("*.jsonl")):
            lines = [line for line in path.read_bytes().splitlines() if line]
            for start in range(0, len(lines), a.per_page):
                chunk = lines[start:start + a.per_page]
                body = b"[" + b",".join(chunk) + b"]"
                client.post(f"{a.api}/ingest", content=body,
                            headers={"content-type": "application/json"}).raise_for_status()
                n += len(chunk)
    return n, time.monotonic() - t0


PG_COLUMNS = ["_id", "@timestamp", "app", "host", "level", "message", "latency_ms", "user_id", "tags", "detail"]


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def s3_to_pg(a: argparse.Namespace) -> tuple[int, float]:
    """COPY FROM STDIN of the same rows, already in memory (read before the clock starts), in one
    transaction; json values through orjson."""
    s3 = _s3(a.s3)
    docs = []
    for obj in s3.list_objects_v2(Bucket=a.bucket, Prefix=a.prefix).get("Contents", []):
        body = gzip.decompress(s3.get_object(Bucket=a.bucket, Key=obj["Key"])["Body"].read())
        docs.extend(orjson.loads(line) for line in body.splitlines() if line)
    t0 = time.monotonic()
    return _copy_rows(a, docs), time.monotonic() - t0


def s3_to_pg_read(a: argparse.Namespace) -> tuple[int, float]:
    """The same job in one plain script: list → get → gunzip → orjson → COPY FROM STDIN, object by
    object, in one transaction (the clock includes reading S3)."""
    t0 = time.monotonic()
    s3 = _s3(a.s3)

    def docs() -> Any:
        for obj in s3.list_objects_v2(Bucket=a.bucket, Prefix=a.prefix).get("Contents", []):
            body = gzip.decompress(s3.get_object(Bucket=a.bucket, Key=obj["Key"])["Body"].read())
            yield from (orjson.loads(line) for line in body.splitlines() if line)

    return _copy_rows(a, docs()), time.monotonic() - t0


def _copy_rows(a: argparse.Namespace, docs: Any) -> int:
    import psycopg
    from psycopg.types.json import Jsonb, set_json_dumps

    set_json_dumps(_json_text)
    columns = ", ".join(f'"{c}"' for c in PG_COLUMNS)
    n = 0
    with psycopg.connect(a.pg) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {a.table} ({columns}) FROM STDIN") as copy:
            for d in docs:
                copy.write_row((d["_id"], d["@timestamp"], d["app"], d["host"], d["level"], d["message"],
                                d["latency_ms"], d["user_id"], Jsonb(d["tags"]), d["detail"]))
                n += 1
        conn.commit()
    return n


def pg_to_s3(a: argparse.Namespace) -> tuple[int, float]:
    """COPY (SELECT to_json(row)) TO STDOUT → gzip → put_object, one object, sequentially."""
    import psycopg

    t0 = time.monotonic()
    s3 = _s3(a.s3)
    out = io.BytesIO()
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    n = 0
    with psycopg.connect(a.pg) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY (SELECT to_json(t)::text FROM {a.table} t) TO STDOUT") as copy:
            for row in copy:  # one row per chunk; text COPY doubles the backslashes of the JSON
                out.write(gz.compress(bytes(row).replace(b"\\\\", b"\\")))
                n += 1
    out.write(gz.flush())
    s3.put_object(Bucket=a.bucket, Key=f"{a.prefix}/part-00000.jsonl.gz", Body=out.getvalue())
    return n, time.monotonic() - t0


def es_to_s3_parquet(a: argparse.Namespace) -> tuple[int, float]:
    """scroll → the records in memory → pq.write_table (zstd) → put_object, one object, sequentially."""
    t0 = time.monotonic()  # like Sluice's run time, the clock includes making the clients and loading pyarrow
    import pyarrow as pa
    import pyarrow.parquet as pq

    es, s3 = _os(a.es), _s3(a.s3)
    records = [{"_id": h["_id"], **h["_source"]} for hits in _scroll(es, a.index) for h in hits]
    out = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records), out, compression="zstd")
    s3.put_object(Bucket=a.bucket, Key=f"{a.prefix}/part-00000.parquet", Body=out.getvalue().to_pybytes())
    return len(records), time.monotonic() - t0


def s3_parquet_to_es(a: argparse.Namespace) -> tuple[int, float]:
    """helpers.bulk of the same documents, read from the Parquet objects before the clock starts."""
    import pyarrow.parquet as pq
    from opensearchpy import helpers

    es, s3 = _os(a.es), _s3(a.s3)
    docs = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix + "/"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                body = s3.get_object(Bucket=a.bucket, Key=obj["Key"])["Body"].read()
                docs.extend(pq.read_table(io.BytesIO(body)).to_pylist())
    actions = [{"_index": a.index, "_id": d.pop("_id"), "_source": d} for d in docs]
    t0 = time.monotonic()
    ok, _ = helpers.bulk(es, actions, chunk_size=2000, max_chunk_bytes=10 * 1024 * 1024)
    return ok, time.monotonic() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=["es_to_s3", "s3_to_es", "es_to_es", "s3_to_s3", "http_source", "http_sink",
                                    "s3_to_pg", "s3_to_pg_read", "pg_to_s3",
                                    "es_to_s3_parquet", "s3_parquet_to_es"])
    p.add_argument("--es")
    p.add_argument("--s3")
    p.add_argument("--index")
    p.add_argument("--dest")
    p.add_argument("--bucket")
    p.add_argument("--prefix")
    p.add_argument("--pg", help="PostgreSQL connection string")
    p.add_argument("--table")
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--api", help="http_*: the API's base URL")
    p.add_argument("--accounts", help="http_source: comma-separated accounts")
    p.add_argument("--per-page", type=int, default=100, help="http_*: records per page or per POST")
    p.add_argument("--data", help="http_sink: folder of JSON Lines files")
    p.add_argument("--out", help="http_source: the output file")
    a = p.parse_args()
    docs, work = globals()[a.name](a)
    a.report.write_bytes(orjson.dumps({"docs": docs, "work_s": work}))


if __name__ == "__main__":
    main()
