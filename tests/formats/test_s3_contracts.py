"""The S3 source and sink pass SourceContract and SinkContract in Parquet and CSV (moto over HTTP),
Parquet both fetched whole and read with ranged GETs."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

from sluice.testing.conformance import SinkContract, SourceContract

from .helpers import BUCKET, conn, decode, encode, events

PARQUET = {"type": "parquet", "row_group_size": 5}
CSV = {"type": "csv", "types": {"n": "int", "latency": "float", "ok": "bool"}}


def seed(s3: Any, fmt: dict[str, Any], ext: str, compress: bool = False) -> None:
    """Four objects (41 records), one of them empty, plus a marker that is not data."""
    n = 0
    for i, size in enumerate([17, 0, 9, 15]):
        body = encode(fmt, events(size, n))
        s3.put_object(Bucket=BUCKET, Key=f"in/f{i}{ext}{'.gz' if compress else ''}",
                      Body=gzip.compress(body) if compress else body)
        n += size
    s3.put_object(Bucket=BUCKET, Key="in/_SUCCESS", Body=b"")


class TestS3ParquetSource(SourceContract):
    @pytest.fixture(params=["fetched", "ranged"])
    def source_block(self, request: Any, s3: Any, bucket: str, moto_url: str) -> dict[str, Any]:
        seed(s3, PARQUET, ".parquet")
        streamed = {"prefetch_max_bytes": 0} if request.param == "ranged" else {}
        return {"type": "s3", "uri": f"s3://{BUCKET}/in", "format": PARQUET, "keys_per_partition": 2,
                **streamed, **conn(moto_url)}

    @pytest.fixture
    def expected_records(self) -> int:
        return 41


class TestS3CsvSource(SourceContract):
    @pytest.fixture
    def source_block(self, s3: Any, bucket: str, moto_url: str) -> dict[str, Any]:
        seed(s3, CSV, ".csv", compress=True)
        return {"type": "s3", "uri": f"s3://{BUCKET}/in", "format": CSV, "keys_per_partition": 3,
                "prefetch_objects": 0, **conn(moto_url)}

    @pytest.fixture
    def expected_records(self) -> int:
        return 41


def read_back(s3: Any, fmt: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="out/"):
        for obj in page.get("Contents") or ():
            if obj["Key"].rsplit("/", 1)[-1].startswith("part-"):
                out.extend(decode(fmt, s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read(), obj["Key"]))
    return out


class TestS3ParquetSink(SinkContract):
    @pytest.fixture
    def sink_block(self, s3: Any, bucket: str, moto_url: str) -> dict[str, Any]:
        return {"type": "s3", "uri": f"s3://{BUCKET}/out", "format": {"type": "parquet", "row_group_size": 4},
                "max_records_per_file": 15, **conn(moto_url)}

    @pytest.fixture
    def read_back(self, s3: Any) -> Any:
        return lambda: read_back(s3, {"type": "parquet"})


class TestS3CsvSink(SinkContract):
    @pytest.fixture
    def sink_block(self, s3: Any, bucket: str, moto_url: str) -> dict[str, Any]:
        return {"type": "s3", "uri": f"s3://{BUCKET}/out", "format": {"type": "csv", "types": {"n": "int"}},
                "compression": "zstd", "max_records_per_file": 15, **conn(moto_url)}

    @pytest.fixture
    def read_back(self, s3: Any) -> Any:
        return lambda: read_back(s3, {"type": "csv", "types": {"n": "int"}})
