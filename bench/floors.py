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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=["es_to_s3", "s3_to_es", "es_to_es", "s3_to_s3"])
    p.add_argument("--es")
    p.add_argument("--s3")
    p.add_argument("--index")
    p.add_argument("--dest")
    p.add_argument("--bucket")
    p.add_argument("--prefix")
    p.add_argument("--report", type=Path, required=True)
    a = p.parse_args()
    docs, work = globals()[a.name](a)
    a.report.write_bytes(orjson.dumps({"docs": docs, "work_s": work}))


if __name__ == "__main__":
    main()
