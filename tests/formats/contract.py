"""FormatContract: what every format promises the file-based sources and sinks. Subclass it with
the fixtures ``format_block`` (a ``format:`` value) and ``records`` (records the format gives back
exactly as they were written)."""

from __future__ import annotations

import io
import pickle
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from sluice.codecs import open_reader
from sluice.formats import Chunk, Format, get_format

from .helpers import encode


def _chunks(fmt: Format, body: bytes, position: dict[str, Any] | None, batch_size: int) -> list[Chunk]:
    stream: Any = io.BytesIO(body)
    if fmt.text:
        stream = open_reader(stream, "none")
    return list(fmt.read(stream, position=position, batch_size=batch_size, where={"file": "f"}))


def _keys(records: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r, option=orjson.OPT_SORT_KEYS, default=str) for r in records]


class FormatContract:
    batch_size = 7  # small, so a file spans several chunks (and Parquet row groups several batches)

    @pytest.fixture
    def fmt(self, format_block: Any) -> Format:
        return get_format(format_block)

    def test_declares_type_options_and_docs(self, fmt: Format) -> None:
        klass = type(fmt)
        assert isinstance(klass.type, str) and klass.type and klass.__doc__
        assert issubclass(klass.Config, BaseModel) and klass.Config.model_config.get("extra") == "forbid"
        assert klass.extension.startswith(".") and klass.extension in klass.suffixes

    def test_the_format_travels_to_other_processes(self, fmt: Format) -> None:
        again = pickle.loads(pickle.dumps(fmt))
        assert again == fmt and again.spec() == fmt.spec() and get_format(fmt.spec()) == fmt

    def test_what_the_writer_wrote_the_reader_reads_back(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        body = encode(fmt, records)
        read = [r for c in _chunks(fmt, body, None, self.batch_size) for r in c.records]
        assert _keys(read) == _keys(records)

    def test_chunks_are_bounded_and_positions_serialisable(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        chunks = _chunks(fmt, encode(fmt, records), None, self.batch_size)
        assert len(chunks) > 1
        for chunk in chunks:
            assert len(chunk.records) + len(chunk.dead_letters) <= self.batch_size
            assert orjson.loads(orjson.dumps(chunk.position)) == chunk.position

    def test_resuming_at_any_position_reads_exactly_the_rest(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        body = encode(fmt, records)
        chunks = _chunks(fmt, body, None, self.batch_size)
        done = 0
        for chunk in chunks:
            done += len(chunk.records)
            rest = [r for c in _chunks(fmt, body, chunk.position, self.batch_size) for r in c.records]
            assert _keys(rest) == _keys(records[done:]), f"resuming at {chunk.position}"

    def test_count_tells_the_records_of_a_file(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        body = encode(fmt, records)
        stream: Any = io.BytesIO(body)
        assert fmt.count(open_reader(stream, "none") if fmt.text else stream) == len(records)

    def test_the_writer_counts_what_it_took(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        writer = fmt.writer()
        writer.add(records[:5])
        writer.add(records[5:])
        writer.finish()
        assert writer.records == len(records)

    def test_a_file_without_records_reads_as_nothing(self, fmt: Format) -> None:
        body = fmt.writer().finish()
        assert [r for c in _chunks(fmt, body, None, self.batch_size) for r in c.records] == []
