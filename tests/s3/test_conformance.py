"""The S3 source and sink pass Sluice's conformance suites (against moto over HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.testing.conformance import SinkContract, SourceContract

from .helpers import BUCKET, conn, put_records, read_prefix


def seed(s3: Any) -> None:
    """Five objects (43 records): an empty one, objects across batch boundaries, every compression."""
    n = 0
    for i, compression in enumerate(["none", "gzip", "zstd", "none", "gzip"]):
        ext = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
        size = [0, 13, 20, 1, 9][i]
        put_records(s3, f"in/f{i}.jsonl{ext}", [{"n": n + j} for j in range(size)], compression)
        n += size
    s3.put_object(Bucket=BUCKET, Key="in/_SUCCESS", Body=b"")  # a marker, not data


class TestS3SourceContract(SourceContract):
    @pytest.fixture
    def source_block(self, s3: Any, bucket: str, moto_url: str) -> dict[str, Any]:
        seed(s3)
        return {"type": "s3", "uri": f"s3://{BUCKET}/in", "keys_per_partition": 2, **conn(moto_url)}

    @pytest.fixture
    def expected_records(self) -> int:
        return 43


class TestS3SourceContractStreaming(TestS3SourceContract):
    """The same contract with every object streamed instead of fetched ahead."""

    @pytest.fixture
    def source_block(self, s3: Any, bucket: str, moto_url: str) -> dict[str, Any]:
        seed(s3)
        return {"type": "s3", "uri": f"s3://{BUCKET}/in", "keys_per_partition": 2, "prefetch_objects": 0,
                **conn(moto_url)}


class TestS3SinkContract(SinkContract):
    @pytest.fixture
    def sink_block(self, s3: Any, bucket: str, moto_url: str) -> dict[str, Any]:
        return {"type": "s3", "uri": f"s3://{BUCKET}/out", "max_records_per_file": 15, **conn(moto_url)}

    @pytest.fixture
    def read_back(self, s3: Any) -> Any:
        return lambda: read_prefix(s3, "out/")
