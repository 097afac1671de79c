"""The format hook: formats come from plugins (core's jsonl, sluice-formats' parquet, csv, tsv, or a
third party's), `format:` is validated with the job, and the local pair answers to `file` and `jsonl`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from sluice import ConfigError, PluginError, hookimpl
from sluice.builtin.files import FileSinkConfig
from sluice.formats import Chunk, Format, FormatWriter, format_types, get_format
from sluice.lines import iter_lines
from sluice.testing import load_test_job, read_jsonl, run_job


class LinesFormat(Format):
    """Plain text: one record ``{"text": line}`` per line (a third-party format, in twenty lines)."""

    type = "lines"
    extension = ".txt"
    suffixes = (".txt",)

    def read(self, stream: BinaryIO, *, position: dict[str, Any] | None, batch_size: int,
             where: dict[str, Any]) -> Iterator[Chunk]:
        skip, n, records = int((position or {}).get("line", 0)), 0, []
        for n, line in enumerate(iter_lines(stream), 1):
            if n > skip:
                records.append({"text": line.decode()})
            if len(records) == batch_size:
                yield Chunk(records, [], {"line": n})
                records = []
        if records:
            yield Chunk(records, [], {"line": n})

    def writer(self, *, state: Any = None, partition_column: str | None = None) -> FormatWriter:
        class Writer(FormatWriter):
            def add(self, records: list[dict[str, Any]]) -> tuple[bytes, list[Any]]:
                self.records += len(records)
                return b"".join(f"{r['text']}\n".encode() for r in records), []

        return Writer()


class LinesPlugin:
    @hookimpl
    def sluice_formats(self) -> list[type]:
        return [LinesFormat]


def test_a_plugin_format_works_with_the_file_source_and_sink(sluice_registry: Any, tmp_path: Path) -> None:
    sluice_registry(LinesPlugin())
    Path("in").mkdir()
    Path("in/a.txt").write_text("one\ntwo\nthree\n")
    summary = run_job({"job_name": "lines", "source": {"type": "file", "path": "in", "format": "lines"},
                       "destination": {"type": "file", "path": "out", "format": "lines", "compression": "gzip"}})
    assert summary.status == "succeeded" and summary.written == 3
    assert sorted(p.name for p in Path("out").iterdir()) == ["_SUCCESS", "_manifest.json", "part-a.txt-00000.txt.gz"]


def test_two_plugins_giving_one_format_name_fail_naming_both(sluice_registry: Any) -> None:
    class Other:
        @hookimpl
        def sluice_formats(self) -> list[type]:
            return [type("Lines2", (LinesFormat,), {"__doc__": "another"})]

    with pytest.raises(PluginError, match=r"format 'lines' is provided by two plugins: '.*' and '.*'"):
        sluice_registry(LinesPlugin(), Other())  # as for component types: when the plugins load


def test_a_broken_format_plugin_is_reported_and_hides_no_other_format(sluice_registry: Any) -> None:
    class Broken:
        @hookimpl
        def sluice_formats(self) -> list[type]:
            raise RuntimeError("no pyarrow here")

    registry = sluice_registry(Broken(), LinesPlugin())
    assert "lines" in format_types(registry)
    with pytest.raises(ValueError, match=r"unknown format 'parquet'.*failed to load: .*RuntimeError: no pyarrow here"):
        get_format("parquet", registry)


def test_an_unknown_format_is_a_config_error_with_the_place_and_a_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        load_test_job({"job_name": "typo", "source": {"type": "file", "path": "in", "format": "parqet"},
                       "destination": {"type": "file", "path": "out"}})
    message = str(info.value)
    assert "source" in message and "format" in message
    assert "unknown format 'parqet'. Did you mean 'parquet'? Known formats: csv, jsonl, parquet, tsv." in message


def test_a_bad_format_option_names_the_format_and_the_option() -> None:
    with pytest.raises(ConfigError, match=r"format parquet: compression: Input should be"):
        load_test_job({"job_name": "bad", "source": {"type": "file", "path": "in"},
                       "destination": {"type": "file", "path": "out",
                                       "format": {"type": "parquet", "compression": "lzo"}}})


def test_the_local_pair_is_file_and_still_answers_to_jsonl(tmp_path: Path) -> None:
    Path("in").mkdir()
    Path("in/a.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    for name in ("file", "jsonl"):
        summary = run_job({"job_name": name, "source": {"type": name, "path": "in"},
                           "destination": {"type": name, "path": f"out-{name}"}})
        assert summary.status == "succeeded" and read_jsonl(f"out-{name}") == [{"a": 1}, {"a": 2}]


def test_the_format_option_has_a_json_schema_and_dumps_back() -> None:
    schema = FileSinkConfig.model_json_schema()["properties"]["format"]
    assert {"type": "string"} in schema["anyOf"]
    config = FileSinkConfig.model_validate({"path": "x", "format": {"type": "parquet", "row_group_size": 10}})
    assert config.model_dump()["format"] == {"type": "parquet", "row_group_size": 10}
    assert FileSinkConfig.model_validate({"path": "x"}).model_dump()["format"] == "jsonl"


def test_loading_the_plugin_and_its_formats_imports_no_pyarrow() -> None:
    code = ("import sys\nfrom sluice.formats import format_types\nfrom sluice.registry import Registry\n"
            "format_types(Registry.from_entry_points())\nassert 'pyarrow' not in sys.modules, 'pyarrow imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
