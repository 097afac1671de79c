"""Parquet writer and reader: schema inference and its policy, declared schemas, nesting, row groups,
codecs, and reading (projection, resume inside a row group, a cut file), with local files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice import Batch
from sluice.formats import Rollover, get_format
from sluice.testing import build, make_context, read_jsonl, run_job

from .helpers import decode, encode, events


def write(block: dict[str, Any], *batches: list[dict[str, Any]]) -> tuple[bytes, list[Any], Any]:
    """The file written from ``batches`` and the dead letters; returns (bytes, dead letters, writer)."""
    writer = get_format(block).writer()
    body, dead = b"", []
    for records in batches:
        data, refused = writer.add(records)
        body += data
        dead += refused
    return body + writer.finish(), dead, writer


def table(body: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(body))


# -- the inferred schema and its policy ---------------------------------------------------------------

def test_widen_lets_a_later_batch_bring_a_column_a_float_and_a_struct_field() -> None:
    body, dead, _ = write({"type": "parquet"},
                          [{"n": 1, "user": {"id": 1}, "note": None}],
                          [{"n": 2.5, "user": {"id": 2, "name": "b"}, "note": "x", "extra": True}])
    assert dead == []
    t = table(body)
    assert t.schema.field("n").type == pa.float64() and t.schema.field("note").type == pa.string()
    assert t.schema.field("user").type == pa.struct([("id", pa.int64()), ("name", pa.string())])
    assert t.to_pylist() == [{"n": 1.0, "user": {"id": 1, "name": None}, "note": None, "extra": None},
                             {"n": 2.5, "user": {"id": 2, "name": "b"}, "note": "x", "extra": True}]


def test_a_conflict_is_a_dead_letter_naming_the_column_and_both_types_and_the_rest_is_written() -> None:
    body, dead, writer = write({"type": "parquet"}, [{"n": 1, "a": "x"}], [{"n": "two", "a": "y"}, {"n": 3, "a": "z"}])
    assert [d.record for d in dead] == [{"n": "two", "a": "y"}]
    assert dead[0].reason == "column 'n': int64 in the file's schema, string in this record"
    assert dead[0].error_type == "SchemaConflict" and dead[0].context == {"column": "n"}
    assert table(body).to_pylist() == [{"n": 1, "a": "x"}, {"n": 3, "a": "z"}] and writer.records == 2


def test_dead_letter_policy_refuses_new_columns_and_other_types() -> None:
    body, dead, _ = write({"type": "parquet", "schema_changes": "dead_letter"},
                          [{"n": 1, "a": None}],
                          [{"n": 2, "a": "filled"}, {"n": 2.5, "a": "b"}, {"n": 3, "a": "c", "new": 1}])
    assert [d.reason for d in dead] == [
        "column 'n': int64 in the file's schema, double in this record",
        "column 'new' is not in the file's schema (int64 in this record)"]
    assert all(d.error_type == "SchemaMismatch" for d in dead)
    # a column still unknown (all null so far) may take its first type
    assert table(body).to_pylist() == [{"n": 1, "a": None}, {"n": 2, "a": "filled"}]


def test_a_wider_schema_after_a_written_row_group_starts_the_next_file() -> None:
    fmt = get_format({"type": "parquet", "row_group_size": 2})
    writer = fmt.writer()
    writer.add([{"n": 1}, {"n": 2}])  # a full row group: written, the file's schema is fixed
    with pytest.raises(Rollover):
        writer.add([{"n": 3, "tag": "new"}])
    assert writer.records == 2
    nxt = fmt.writer(state=writer.state)
    data, dead = nxt.add([{"n": 3, "tag": "new"}])
    assert dead == [] and table(data + nxt.finish()).schema.names == ["n", "tag"]


def test_the_file_sink_rolls_over_on_a_wider_schema_and_keeps_every_record(tmp_path: Path) -> None:
    sink = build("sink", {"type": "file", "path": str(tmp_path / "out"),
                          "format": {"type": "parquet", "row_group_size": 2}}, make_context())
    sink.start_partition("p", 0)
    sink.write(Batch([{"n": 1}, {"n": 2}], "p", 0))
    result = sink.write(Batch([{"n": 3, "tag": "t"}], "p", 1))
    sink.finish_partition("p")
    sink.close()
    assert result.written == 1 and result.dead_letters == []
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["part-p-00000.parquet", "part-p-00001.parquet"]
    schemas = [pq.read_schema(tmp_path / "out" / f).names for f in files]
    assert schemas == [["n"], ["n", "tag"]]
    rows = sorted((r["n"], r.get("tag")) for r in decode("parquet", (tmp_path / "out" / files[0]).read_bytes()) +
                  decode("parquet", (tmp_path / "out" / files[1]).read_bytes()))
    assert rows == [(1, None), (2, None), (3, "t")]


def test_a_value_parquet_cannot_hold_is_a_dead_letter() -> None:
    _, dead, _ = write({"type": "parquet"}, [{"n": 1}, {"n": 2**70}])
    assert len(dead) == 1 and dead[0].error_type == "Unconvertible" and "column 'n'" in dead[0].reason


def test_empty_objects_become_nulls() -> None:
    body, dead, _ = write({"type": "parquet"}, [{"a": {}, "b": 1}])
    assert dead == [] and table(body).to_pylist() == [{"a": None, "b": 1}]


# -- declared schemas, nesting, options ---------------------------------------------------------------

def test_a_declared_schema_casts_values_leaves_undeclared_fields_out_and_refuses_what_does_not_cast() -> None:
    block = {"type": "parquet", "schema": {"n": "int64", "at": "timestamp[ms, tz=UTC]", "price": "decimal(8, 2)",
                                           "meta": "json", "tags": "list<string>"}}
    body, dead, _ = write(block, [
        {"n": "12", "at": "2024-01-01T12:00:00Z", "price": "3.50", "meta": {"k": [1]}, "tags": ["a"], "other": 1},
        {"n": "twelve", "at": "2024-01-01T12:00:00Z"},
        {"n": 13, "at": None, "price": 1.25, "meta": None}])
    t = table(body)
    assert t.schema.names == ["n", "at", "price", "meta", "tags"]
    assert t.schema.field("at").type == pa.timestamp("ms", tz="UTC")
    assert t.column("n").to_pylist() == [12, 13]
    assert t.column("meta").to_pylist() == ['{"k":[1]}', None]
    assert [str(v) for v in t.column("price").to_pylist()] == ["3.50", "1.25"]
    assert [(d.error_type, d.context) for d in dead] == [("CastError", {"column": "n"})]
    assert dead[0].reason.startswith("column 'n': 'twelve' (str) does not cast to int64")


def test_declared_types_are_checked_when_the_job_is_validated() -> None:
    with pytest.raises(ValueError, match=r"column 'n': unknown type 'integr'"):
        get_format({"type": "parquet", "schema": {"n": "integr"}})


def test_nested_records_flatten_into_dotted_columns() -> None:
    body, _, _ = write({"type": "parquet", "nested": "flatten"}, [{"a": {"b": 1, "c": {"d": "x"}}, "e": [1]}])
    assert table(body).to_pylist() == [{"a.b": 1, "a.c.d": "x", "e": [1]}]


def test_nested_records_stay_structs_by_default() -> None:
    body, _, _ = write({"type": "parquet"}, [{"a": {"b": 1, "c": {"d": "x"}}}])
    assert pa.types.is_struct(table(body).schema.field("a").type)


def test_row_groups_codec_and_dictionary_follow_the_options() -> None:
    body, _, _ = write({"type": "parquet", "row_group_size": 10, "compression": "snappy", "dictionary": False},
                       events(25))
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10, 10, 5]
    column = meta.row_group(0).column(2)  # app: three values, a dictionary's favourite
    assert column.compression == "SNAPPY" and not column.has_dictionary_page
    default = pq.ParquetFile(io.BytesIO(encode("parquet", events(25)))).metadata.row_group(0).column(2)
    assert default.compression == "ZSTD" and default.has_dictionary_page


def test_row_group_bytes_closes_a_row_group_early() -> None:
    body, _, _ = write({"type": "parquet", "row_group_bytes": 1}, events(5), events(5, 5))
    assert pq.ParquetFile(io.BytesIO(body)).metadata.num_row_groups == 2


# -- reading -------------------------------------------------------------------------------------------

def test_projection_reads_only_the_named_columns() -> None:
    fmt = get_format({"type": "parquet", "columns": ["n", "app"]})
    chunks = list(fmt.read(io.BytesIO(encode("parquet", events(3))), position=None, batch_size=10, where={}))
    assert chunks[0].records == [{"n": 0, "app": "web"}, {"n": 1, "app": "api"}, {"n": 2, "app": "db"}]


def test_projection_of_a_missing_column_fails_naming_it() -> None:
    fmt = get_format({"type": "parquet", "columns": ["nope"]})
    with pytest.raises(Exception, match=r"column\(s\) \['nope'\] not in x.parquet"):
        list(fmt.read(io.BytesIO(encode("parquet", events(3))), position=None, batch_size=10,
                      where={"file": "x.parquet"}))


def test_positions_are_row_group_and_offset_and_resume_inside_a_row_group() -> None:
    fmt = get_format("parquet")
    body = encode({"type": "parquet", "row_group_size": 10}, events(25))
    chunks = list(fmt.read(io.BytesIO(body), position=None, batch_size=4, where={}))
    assert [c.position for c in chunks[:4]] == [{"row_group": 0, "offset": 4}, {"row_group": 0, "offset": 8},
                                                {"row_group": 0, "offset": 10}, {"row_group": 1, "offset": 4}]
    rest = list(fmt.read(io.BytesIO(body), position={"row_group": 1, "offset": 3}, batch_size=4, where={}))
    assert [r["n"] for c in rest for r in c.records] == list(range(13, 25))


def test_a_cut_file_fails_the_partition_naming_the_file(tmp_path: Path) -> None:
    body = encode({"type": "parquet", "row_group_size": 10}, events(40))
    (tmp_path / "in").mkdir()
    (tmp_path / "in/cut.parquet").write_bytes(body[: len(body) // 2])
    summary = run_job({"job_name": "cut", "source": {"type": "file", "path": "in", "format": "parquet"},
                       "destination": {"type": "file", "path": "out"}})
    assert summary.status == "failed" and summary.written == 0
    assert f"{(tmp_path / 'in/cut.parquet').resolve()}: cannot read past row group 0, offset 0" in summary.error
    assert "Parquet magic bytes not found" in summary.error


def test_local_parquet_to_jsonl_and_back_keeps_every_record_and_type(tmp_path: Path) -> None:
    records = events(250)
    Path("in").mkdir()
    Path("in/a.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    to_parquet = run_job({"job_name": "to_pq", "runtime": {"batch_size": 40},
                          "source": {"type": "file", "path": "in"},
                          "destination": {"type": "file", "path": "pq", "format": {"type": "parquet",
                                                                                   "row_group_size": 64}}})
    assert to_parquet.status == "succeeded" and to_parquet.written == 250
    manifest = orjson.loads(Path("pq/_manifest.json").read_bytes())
    assert manifest["format"] == "parquet" and manifest["records"] == 250
    assert [f["name"] for f in manifest["files"]] == ["part-a.jsonl-00000.parquet"]
    back = run_job({"job_name": "from_pq", "runtime": {"batch_size": 33},
                    "source": {"type": "file", "path": "pq", "format": "parquet"},
                    "destination": {"type": "jsonl", "path": "back"}})
    assert back.status == "succeeded" and back.read == 250
    assert read_jsonl("back") == records
