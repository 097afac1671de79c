"""Every format passes FormatContract, and SourceContract / SinkContract through the local `file`
source and sink in every format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice.testing.conformance import FormatContract, SinkContract, SourceContract

from .helpers import encode, events, read_folder

CSV_TYPES = {"n": "int", "latency": "float", "ok": "bool"}
FORMATS = {
    "jsonl": "jsonl",
    "parquet": {"type": "parquet", "row_group_size": 10},
    "parquet-flat": {"type": "parquet", "row_group_size": 10, "nested": "flatten"},
    "csv": {"type": "csv", "types": CSV_TYPES},
    "tsv": {"type": "tsv", "types": CSV_TYPES},
}


class TestFormats(FormatContract):
    @pytest.fixture(params=sorted(FORMATS))
    def format_block(self, request: Any) -> Any:
        return FORMATS[request.param]

    @pytest.fixture
    def records(self) -> list[dict[str, Any]]:
        return events(61)  # not a multiple of the row group size: the last one is partial


# -- the local file source and sink in each format ---------------------------------------------------

SOURCE_FORMATS = ["parquet", "csv", "tsv"]


class TestFileSourceInEachFormat(SourceContract):
    @pytest.fixture(params=SOURCE_FORMATS)
    def source_block(self, request: Any, tmp_path: Path) -> dict[str, Any]:
        fmt = FORMATS[request.param]
        ext = {"parquet": ".parquet", "csv": ".csv", "tsv": ".tsv"}[request.param]
        folder = tmp_path / "in"
        (folder / "sub").mkdir(parents=True)
        (folder / f"a{ext}").write_bytes(encode(fmt, events(23)))
        (folder / f"sub/b{ext}").write_bytes(encode(fmt, events(14, 100)))
        (folder / "notes.txt").write_text("not data")  # skipped: not the format's extension
        return {"type": "file", "path": str(folder), "format": fmt}

    @pytest.fixture
    def expected_records(self) -> int:
        return 37


SINK_TYPES = {"n": "int"}
SINK_FORMATS = {
    "parquet": {"type": "parquet", "row_group_size": 4},
    "csv": {"type": "csv", "types": {**SINK_TYPES, "tags": "json"}},
    "tsv": {"type": "tsv", "types": {**SINK_TYPES, "tags": "json"}},
}


class TestFileSinkInEachFormat(SinkContract):
    @pytest.fixture(params=sorted(SINK_FORMATS))
    def sink_block(self, request: Any, tmp_path: Path) -> dict[str, Any]:
        return {"type": "file", "path": str(tmp_path / "out"), "format": SINK_FORMATS[request.param],
                "max_records_per_file": 12}

    @pytest.fixture
    def read_back(self, sink_block: dict[str, Any], tmp_path: Path) -> Any:
        return lambda: read_folder(sink_block["format"], tmp_path / "out")
