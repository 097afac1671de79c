"""Conformance suites: subclass one in your plugin's tests and provide its fixtures.

    from sluice.testing.conformance import SourceContract

    class TestMySource(SourceContract):
        @pytest.fixture
        def source_block(self, my_server):
            return {"type": "my_source", "url": my_server.url}

        @pytest.fixture
        def expected_records(self):
            return 250

Each suite checks the contract the engine relies on: stable, serialisable partitions and exact
resume for sources; complete, idempotent writes for sinks; accounted-for records for transforms;
and for file formats (``FormatContract``), what the writer wrote read back exactly, in bounded
chunks, resumable from any position.
"""

from __future__ import annotations

import io
import pickle
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from ..codecs import open_reader
from ..components import Sink, SinkRun, Source, Transform
from ..formats import Chunk, Format, get_format
from ..records import Batch, Partition
from . import build, make_context


def _key(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def _check_class(component: Any) -> None:
    klass = type(component)
    assert isinstance(klass.type, str) and klass.type, "a component needs a non-empty `type`"
    assert issubclass(klass.Config, BaseModel), "`Config` must be a pydantic model"
    assert klass.Config.model_config.get("extra") == "forbid", "`Config` must forbid unknown keys (extra='forbid')"
    assert klass.__doc__, "a component class needs a docstring (it documents the type)"


class SourceContract:
    """Fixtures to provide: ``source_block`` (the job block) and ``expected_records`` (an int)."""

    batch_size = 7  # small, so every partition spans several batches

    @pytest.fixture
    def source(self, source_block: dict[str, Any]) -> Any:
        source = build("source", source_block, make_context(batch_size=self.batch_size))
        yield source
        source.close()

    def _read(self, source: Source, partition: Partition, checkpoint: Any = None) -> list[Batch]:
        return list(source.read(partition, checkpoint))

    def test_declares_type_config_and_docs(self, source: Source) -> None:
        _check_class(source)

    def test_partitions_are_stable_unique_and_serialisable(self, source: Source) -> None:
        first = list(source.partitions())
        again = list(source.partitions())
        assert [p.key for p in first] == [p.key for p in again], "partition keys must be stable"
        assert len({p.key for p in first}) == len(first), "partition keys must be unique"
        for p in first:
            assert Partition.from_dict(orjson.loads(orjson.dumps(p.to_dict()))) == p

    def test_a_fresh_instance_plans_the_same_partitions(self, source: Source, source_block: dict[str, Any]) -> None:
        """A resume compares each partition's fingerprint (a hash of its spec) with the one saved at
        its checkpoint: the spec must say what the partition reads, the same way every time."""
        other = build("source", source_block, make_context(batch_size=self.batch_size))
        try:
            assert [(p.key, p.fingerprint) for p in other.partitions()] == \
                [(p.key, p.fingerprint) for p in source.partitions()]
        finally:
            other.close()

    def test_reads_every_record_in_bounded_batches(self, source: Source, expected_records: int) -> None:
        total = 0
        for p in source.partitions():
            for batch in self._read(source, p):
                assert len(batch.records) + len(batch.dead_letters) <= self.batch_size
                orjson.dumps(batch.checkpoint)  # checkpoints must be JSON-serialisable
                total += len(batch.records)
        assert total == expected_records

    def test_resume_from_any_checkpoint_yields_exactly_the_rest(self, source: Source) -> None:
        for p in source.partitions():
            batches = self._read(source, p)
            everything = [_key(r) for b in batches for r in b.records]
            for i, batch in enumerate(batches[:-1]):
                rest = [_key(r) for b in self._read(source, p, batch.checkpoint) for r in b.records]
                done = sum(len(b.records) for b in batches[: i + 1])
                assert rest == everything[done:], f"resuming {p.key} after batch {i} must yield exactly the rest"


def _batches(part: str, chunk: list[dict[str, Any]]) -> list[Batch]:
    return [Batch([dict(r) for r in chunk[start:start + 10]], part, seq, start + 10)
            for seq, start in enumerate(range(0, len(chunk), 10))]


def write_partitions(block: dict[str, Any], parts: list[tuple[str, list[dict[str, Any]]]],
                     resume: bool = False) -> tuple[int, dict[str, Any]]:
    """Write ``parts`` (``[(partition, records)]``) through one sink instance, as an engine step
    does: start, write in batches of 10, finish; returns ``(records written, report())``.

    Module-level so that a separate process can run it (the multi-process contract test).
    """
    ctx = make_context()
    ctx.resume = resume
    sink: Sink = build("sink", block, ctx)
    written = 0
    try:
        for part, chunk in parts:
            sink.start_partition(part, 0)
            for batch in _batches(part, chunk):
                result = sink.write(batch)
                assert result.written + len(result.dead_letters) == len(batch.records), "every record accounted"
                written += result.written
            sink.finish_partition(part)
        return written, sink.report()
    finally:
        sink.close()


def commit_run(block: dict[str, Any], partitions: list[str], reports: list[dict[str, Any]]) -> None:
    """Commit a run from a fresh instance that wrote nothing (a staged run's finalize)."""
    sink: Sink = build("sink", block, make_context())
    try:
        sink.commit(SinkRun(tuple(partitions), tuple(reports)))
    finally:
        sink.close()


def prepare_run(block: dict[str, Any]) -> None:
    """Prepare a run from a fresh instance (a staged run's plan)."""
    sink: Sink = build("sink", block, make_context())
    try:
        sink.prepare(SinkRun())
    finally:
        sink.close()


class SinkContract:
    """The two-phase sink contract (see ``Sink``). Fixtures to provide: ``sink_block`` and
    ``read_back`` (a callable returning every record the destination holds for the run).

    ``prunes_partitions = False`` for a destination that cannot tell which partition wrote what
    (an index written by id): commit then cannot remove partitions a run no longer has.
    """

    prunes_partitions = True

    @pytest.fixture
    def records(self) -> list[dict[str, Any]]:
        return [{"_id": f"id-{i}", "n": i, "name": f"record {i}", "tags": ["a", "b"][: i % 3]} for i in range(40)]

    @staticmethod
    def _parts(records: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
        return [("p-a", records[:25]), ("p-b", records[25:])]

    def _run(self, block: dict[str, Any], parts: list[tuple[str, list[dict[str, Any]]]]) -> int:
        """One plain run: prepare, write every partition in one instance, commit from it."""
        prepare_run(block)
        written, report = write_partitions(block, parts)
        commit_run(block, [p for p, _ in parts], [report])
        return written

    @staticmethod
    def _numbers(read_back: Callable[[], list[dict[str, Any]]]) -> Counter[Any]:
        return Counter(r["n"] for r in read_back())

    def test_declares_type_config_and_docs(self, sink_block: dict[str, Any]) -> None:
        sink = build("sink", sink_block)
        _check_class(sink)
        sink.close()

    def test_writes_every_record(self, sink_block: dict[str, Any], records: list[dict[str, Any]],
                                 read_back: Callable[[], list[dict[str, Any]]]) -> None:
        assert self._run(sink_block, self._parts(records)) == len(records)
        assert self._numbers(read_back) == Counter(r["n"] for r in records)

    def test_rewriting_the_same_run_is_idempotent(self, sink_block: dict[str, Any], records: list[dict[str, Any]],
                                                  read_back: Callable[[], list[dict[str, Any]]]) -> None:
        self._run(sink_block, self._parts(records))
        self._run(sink_block, self._parts(records))
        assert self._numbers(read_back) == Counter(r["n"] for r in records), "a re-run must not duplicate"

    def test_partitions_written_in_two_processes_and_committed_in_a_third_match_one_run(
            self, sink_block: dict[str, Any], records: list[dict[str, Any]],
            read_back: Callable[[], list[dict[str, Any]]]) -> None:
        import multiprocessing

        self._run(sink_block, self._parts(records))
        plain = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in read_back())
        prepare_run(sink_block)  # a staged re-run of the same interval: plan, mapped loads, finalize
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            results = pool.starmap(write_partitions, [(sink_block, [part]) for part in self._parts(records)])
        assert sum(n for n, _ in results) == len(records)
        commit_run(sink_block, ["p-a", "p-b"], [report for _, report in results])
        staged = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in read_back())
        assert staged == plain, "a run written by several processes and committed by another must equal one run"

    def test_a_partition_written_again_replaces_what_it_wrote_before(
            self, sink_block: dict[str, Any], records: list[dict[str, Any]],
            read_back: Callable[[], list[dict[str, Any]]]) -> None:
        self._run(sink_block, self._parts(records))
        again = [dict(r) for r in records[:25]]
        write_partitions(sink_block, [("p-a", again)])  # one task cleared and run alone
        commit_run(sink_block, ["p-a", "p-b"], [])
        assert self._numbers(read_back) == Counter(r["n"] for r in records)

    def test_commit_removes_partitions_the_run_no_longer_has(
            self, sink_block: dict[str, Any], records: list[dict[str, Any]],
            read_back: Callable[[], list[dict[str, Any]]]) -> None:
        if not self.prunes_partitions:
            pytest.skip("this destination cannot tell which partition wrote a record")
        self._run(sink_block, self._parts(records))
        self._run(sink_block, [("p-a", records[:25])])  # the source's partitioning changed
        assert self._numbers(read_back) == Counter(r["n"] for r in records[:25])


class TransformContract:
    """Fixtures to provide: ``transform_block`` and ``sample_records`` (a list of dicts)."""

    @pytest.fixture
    def transform(self, transform_block: dict[str, Any]) -> Any:
        t = build("transform", transform_block)
        yield t
        t.close()

    def test_declares_type_config_and_docs(self, transform: Transform) -> None:
        _check_class(transform)

    def test_accounts_for_every_record(self, transform: Transform, sample_records: list[dict[str, Any]]) -> None:
        batch = Batch([dict(r) for r in sample_records], "p", 0, None)
        out = transform.apply(batch)
        held = transform.flush("p") + transform.flush(None)
        assert isinstance(out, Batch)
        for dl in out.dead_letters:
            assert dl.reason, "a dead letter needs a reason"
        # a transform may drop (filter), reject (dead-letter) or create records, but the engine derives
        # those counts from sizes, so the batch must stay a batch of dicts
        assert all(isinstance(r, dict) for r in [*out.records, *held])

    def test_stateless_transforms_can_run_in_a_process_pool(self, transform: Transform) -> None:
        if type(transform).stateless:
            pickle.dumps(type(transform))
            pickle.dumps(transform.config)


# -- formats ------------------------------------------------------------------------------------
def encode(fmt: Format | str | dict[str, Any], records: list[dict[str, Any]]) -> bytes:
    """One whole file of ``records`` in ``fmt``, as a sink writes it (uncompressed); the writer
    must take every record."""
    fmt = get_format(fmt)
    writer = fmt.writer()
    data, dead = writer.add(records)
    assert not dead, f"the writer refused records: {[d.reason for d in dead]}"
    return data + writer.finish()


def _chunks(fmt: Format, body: bytes, position: dict[str, Any] | None, batch_size: int) -> list[Chunk]:
    stream: Any = io.BytesIO(body)
    if fmt.text:
        stream = open_reader(stream, "none")
    return list(fmt.read(stream, position=position, batch_size=batch_size, where={"file": "f"}))


def _sorted_keys(records: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(r, option=orjson.OPT_SORT_KEYS, default=str) for r in records]


class FormatContract:
    """What every file format promises the file-based sources and sinks (see ``sluice.formats``).

    Fixtures to provide: ``format_block`` (a ``format:`` value: a name or a block with options) and
    ``records`` (enough for several chunks of ``batch_size``, and records the format gives back
    exactly as they were written: a typed CSV needs its ``types``).
    """

    batch_size = 7  # small, so a file spans several chunks (and Parquet row groups several batches)

    @pytest.fixture
    def fmt(self, format_block: Any) -> Format:
        return get_format(format_block)

    def test_declares_type_options_and_docs(self, fmt: Format) -> None:
        klass = type(fmt)
        assert isinstance(klass.type, str) and klass.type, "a format needs a non-empty `type`"
        assert klass.__doc__, "a format class needs a docstring (it documents the format)"
        assert issubclass(klass.Config, BaseModel) and klass.Config.model_config.get("extra") == "forbid", \
            "`Config` must be a pydantic model that forbids unknown keys (subclass FormatConfig)"
        assert klass.extension.startswith(".") and klass.extension in klass.suffixes, \
            "`extension` starts with a dot and is one of `suffixes` (a folder listing reads what a sink wrote)"

    def test_the_format_travels_to_other_processes(self, fmt: Format) -> None:
        again = pickle.loads(pickle.dumps(fmt))
        assert again == fmt and again.spec() == fmt.spec() and get_format(fmt.spec()) == fmt

    def test_what_the_writer_wrote_the_reader_reads_back(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        body = encode(fmt, records)
        read = [r for c in _chunks(fmt, body, None, self.batch_size) for r in c.records]
        assert _sorted_keys(read) == _sorted_keys(records)

    def test_chunks_are_bounded_and_positions_serialisable(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        chunks = _chunks(fmt, encode(fmt, records), None, self.batch_size)
        assert len(chunks) > 1, f"give more than {self.batch_size} records, so the file spans several chunks"
        for chunk in chunks:
            assert len(chunk.records) + len(chunk.dead_letters) <= self.batch_size
            assert orjson.loads(orjson.dumps(chunk.position)) == chunk.position, "positions must be JSON"

    def test_resuming_at_any_position_reads_exactly_the_rest(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        body = encode(fmt, records)
        done = 0
        for chunk in _chunks(fmt, body, None, self.batch_size):
            done += len(chunk.records)
            rest = [r for c in _chunks(fmt, body, chunk.position, self.batch_size) for r in c.records]
            assert _sorted_keys(rest) == _sorted_keys(records[done:]), f"resuming at {chunk.position}"

    def test_count_tells_the_records_of_a_file(self, fmt: Format, records: list[dict[str, Any]]) -> None:
        stream: Any = io.BytesIO(encode(fmt, records))
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
