"""Benchmark documents: the demo's log events padded to about 1 KB each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sluice.demo.data import events

FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "


# A log index as one would map it: keywords, one analysed message, the bulky detail stored but not indexed
MAPPINGS = {"mappings": {"properties": {
    "@timestamp": {"type": "date"}, "app": {"type": "keyword"}, "service": {"type": "keyword"},
    "host": {"type": "keyword"}, "level": {"type": "keyword"}, "message": {"type": "text"},
    "latency_ms": {"type": "long"}, "user_id": {"type": "keyword"}, "tags": {"type": "keyword"},
    "detail": {"type": "text", "index": False},
}}}


def docs(n: int, seed: int = 1) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, doc)`` pairs of about 1 KB of JSON each, all valid (no dead letters)."""
    for doc_id, event in events(n, seed=seed, bad_every=0):
        event["latency_ms"] = int(event["latency_ms"])
        event["detail"] = (FILLER * 8)[: 760 - len(event["message"])]
        event["tags"] = ["bench", event["app"], event["level"].lower()]
        yield doc_id, event


def seed_s3(s3_url: str, bucket: str, prefix: str, n: int, per_object: int = 2000) -> int:
    """Write the documents (with their ``_id``) to gzip JSON Lines objects."""
    import gzip

    import boto3
    import orjson
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    batch: list[bytes] = []
    part = 0
    for doc_id, doc in docs(n):
        batch.append(orjson.dumps({"_id": doc_id, **doc}))
        if len(batch) == per_object:
            s3.put_object(Bucket=bucket, Key=f"{prefix}/part-{part:05d}.jsonl.gz",
                          Body=gzip.compress(b"\n".join(batch) + b"\n", 6))
            part, batch = part + 1, []
    if batch:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/part-{part:05d}.jsonl.gz",
                      Body=gzip.compress(b"\n".join(batch) + b"\n", 6))
    return n
