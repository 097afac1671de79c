"""Helpers for the S3 plugin tests: put objects, list keys, read records back."""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from typing import Any

import orjson

BUCKET = "sluice-test"


# Fast retries: tests inject faults and must not sleep for seconds.
FAST_RUNTIME = {"retry": {"attempts": 4, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_time_s": 30}}


def encode(records: Iterable[Any], compression: str = "none") -> bytes:
    """Records as JSON Lines bytes, compressed like a file of that kind."""
    data = b"".join(orjson.dumps(r) + b"\n" for r in records)
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def put_records(s3: Any, key: str, records: Iterable[Any], compression: str = "none", bucket: str = BUCKET) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=encode(records, compression))


def keys(s3: Any, prefix: str = "", bucket: str = BUCKET) -> list[str]:
    """Every key under ``prefix`` (all pages)."""
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(o["Key"] for o in page.get("Contents") or ())
    return sorted(out)


def read_records(s3: Any, key: str, bucket: str = BUCKET) -> list[dict[str, Any]]:
    """Records of one object, decompressed by its extension."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    elif key.endswith(".zst"):
        import zstandard

        body = zstandard.ZstdDecompressor().stream_reader(body, read_across_frames=True).read()
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def read_prefix(s3: Any, prefix: str, name: str = "part-", bucket: str = BUCKET) -> list[dict[str, Any]]:
    """Records of every object under ``prefix`` whose file name starts with ``name``."""
    out: list[dict[str, Any]] = []
    for key in keys(s3, prefix, bucket):
        if key.rsplit("/", 1)[-1].startswith(name):
            out.extend(read_records(s3, key, bucket))
    return out


def conn(url: str) -> dict[str, Any]:
    """Connection options for a job block pointing at ``url`` (moto or a fault proxy)."""
    return {"endpoint_url": url, "region": "us-east-1"}


def seed_many(bucket: str, objects: Iterable[tuple[str, bytes]]) -> None:
    """Create many objects quickly, straight in the moto server's in-process store (setup only: the
    code under test still lists and reads them over HTTP). One PUT over HTTP costs ~5 ms."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key, body in objects:
        backend.put_object(bucket, key, body)
