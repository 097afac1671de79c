"""CSV and TSV: bad rows become dead letters with file and line, dialect and encoding options, declared
types both ways, compression stays the container's, resume inside a file."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.formats import get_format
from sluice.testing import read_jsonl, run_job

from .helpers import decode, encode


def read(block: Any, text: bytes, batch_size: int = 100, position: Any = None) -> tuple[list[Any], list[Any]]:
    fmt = get_format(block)
    chunks = list(fmt.read(io.BytesIO(text), position=position, batch_size=batch_size, where={"file": "f.csv"}))
    return [r for c in chunks for r in c.records], [d for c in chunks for d in c.dead_letters]


def test_bad_rows_are_dead_letters_with_file_and_line_and_the_rest_loads(tmp_path: Path) -> None:
    data = (b"id,n,when\n"
            b"1,10,2024-01-01\n"
            b"2,20\n"                             # line 3: a field short
            b"3,thirty,2024-01-03\n"              # line 4: not an int
            b'4,40,"2024-01-04"\n'
            b'"5\nfive",50,2024-01-05\n'          # lines 6-7: one row over two lines
            b"6,\xff60,2024-01-06\n"              # line 8: not UTF-8
            b"7,70,2024-01-07,extra\n")           # line 9: a field too many
    Path("in").mkdir()
    Path("in/a.csv").write_bytes(data)
    summary = run_job({"job_name": "bad_rows", "runtime": {"error_rate_threshold": 1},
                       "source": {"type": "file", "path": "in",
                                  "format": {"type": "csv", "types": {"n": "int", "when": "date"}}},
                       "destination": {"type": "file", "path": "out"}, "dead_letter": {"type": "file", "path": "dead"}})
    assert summary.status == "succeeded" and summary.written == 3 and summary.dead_lettered == {"source": 4}
    assert [(r["id"], r["n"], r["when"]) for r in read_jsonl("out")] == [
        ("1", 10, "2024-01-01"), ("4", 40, "2024-01-04"), ("5\nfive", 50, "2024-01-05")]
    dead = sorted(read_jsonl("dead"), key=lambda d: d["context"]["line"])
    assert [(d["context"]["line"], d["error_type"]) for d in dead] == [
        (3, "FieldCount"), (4, "CastError"), (8, "NotDecodable"), (9, "FieldCount")]
    assert dead[0]["context"]["file"] == str((tmp_path / "in/a.csv").resolve())
    assert dead[0]["reason"] == "line 3: 2 fields, expected 3 (id, n, when)" and dead[0]["record"] == "2,20"
    assert dead[1]["reason"].startswith("line 4: column 'n': 'thirty' is not a int")
    assert dead[1]["context"]["column"] == "n" and dead[1]["record"] == "3,thirty,2024-01-03"
    assert dead[2]["context"]["encoding"] == "base64" and dead[2]["record"] == "Niz/NjAsMjAyNC0wMS0wNg=="


def test_positions_count_physical_lines_and_resume_at_the_next_row() -> None:
    data = b'a,b\n1,x\n2,"two\nlines"\n3,z\n4,w\n'
    fmt = get_format("csv")
    chunks = list(fmt.read(io.BytesIO(data), position=None, batch_size=1, where={}))
    assert [c.position for c in chunks] == [{"line": 2}, {"line": 4}, {"line": 5}, {"line": 6}]
    records, _ = read("csv", data, position={"line": 4})
    assert records == [{"a": "3", "b": "z"}, {"a": "4", "b": "w"}]


def test_resume_mid_csv_after_a_failed_run_delivers_every_row_once(s3: Any, bucket: str, moto_url: str,
                                                                    fault_proxy: Any) -> None:
    from .helpers import BUCKET, conn

    Path("in").mkdir()
    rows = "".join(f'{i},"row {i}, with a comma"\n' for i in range(1000))
    Path("in/big.csv.gz").write_bytes(gzip.compress(("n,text\n" + rows).encode()))
    proxy = fault_proxy(moto_url)
    proxy.add(method="PUT", path=r"/out/.*-0000[6-9]\.jsonl\.gz", status=500, times=10_000)  # from batch 6 on
    job = {"job_name": "csv_resume", "runtime": {"batch_size": 100, "retry": {"attempts": 2, "initial_backoff_s": 0.01,
                                                                               "max_backoff_s": 0.01}},
           "source": {"type": "file", "path": "in", "format": {"type": "csv", "types": {"n": "int"}}},
           "destination": {"type": "s3", "uri": f"s3://{BUCKET}/out", "max_records_per_file": 100, "max_attempts": 1,
                           **conn(proxy.url)},
           "checkpoints": {"type": "local", "path": "cp"}}
    first = run_job(job)
    assert first.status == "failed" and first.written == 600
    saved = orjson.loads(next(Path("cp").rglob("*.json")).read_bytes())
    assert saved["big.csv.gz"]["position"] == 601  # lines consumed: the header and 600 rows
    proxy.clear()
    second = run_job(job, resume=True)
    assert second.status == "succeeded" and second.read == 400, second.error
    got = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="out/"):
        for obj in page.get("Contents") or ():
            if "/part-" in obj["Key"]:
                body = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
                got += [orjson.loads(line)["n"] for line in body.splitlines()]
    assert sorted(got) == list(range(1000))


def test_dialect_encoding_null_and_header_options_write_and_read_back() -> None:
    block = {"type": "csv", "delimiter": ";", "quoting": "all", "encoding": "latin-1", "null_value": "\\N",
             "header": False, "columns": ["name", "city", "score"], "types": {"score": "float"}}
    records = [{"name": "Zoë", "city": None, "score": 1.5, "ignored": "not a column"}, {"name": "a;b", "score": 2}]
    body = encode(block, records)
    assert body == '"Zoë";"\\N";"1.5"\n"a;b";"\\N";"2.0"\n'.encode("latin-1")
    assert decode(block, body) == [{"name": "Zoë", "city": None, "score": 1.5},
                                   {"name": "a;b", "city": None, "score": 2.0}]


def test_tsv_is_tab_separated_and_named_tsv(tmp_path: Path) -> None:
    Path("in").mkdir()
    Path("in/a.jsonl").write_bytes(b'{"a": 1, "b": "x y"}\n{"a": 2, "b": null}\n')
    summary = run_job({"job_name": "tsv", "source": {"type": "file", "path": "in"},
                       "destination": {"type": "file", "path": "out", "format": "tsv", "compression": "gzip"}})
    assert summary.status == "succeeded"
    (part,) = Path("out").glob("part-*")
    assert part.name == "part-a.jsonl-00000.tsv.gz"
    assert gzip.decompress(part.read_bytes()) == b"a\tb\n1\tx y\n2\t\n"


def test_the_writer_refuses_unknown_fields_and_values_that_do_not_cast() -> None:
    writer = get_format({"type": "csv", "types": {"n": "int", "ok": "bool"}}).writer()
    first, _ = writer.add([{"n": 1, "ok": True}])  # the file's columns: the first batch's fields
    data, dead = writer.add([{"n": "2", "ok": "yes"}, {"n": 1.5, "ok": True}, {"n": 3, "ok": False, "surprise": 1}])
    assert first + data == b"n,ok\n1,true\n2,true\n"
    assert [(d.error_type, d.context) for d in dead] == [("CastError", {"column": "n"}),
                                                         ("UnknownField", {"fields": ["surprise"]})]
    assert writer.records == 2


def test_a_row_the_encoding_cannot_hold_is_a_dead_letter() -> None:
    writer = get_format({"type": "csv", "encoding": "ascii"}).writer()
    data, dead = writer.add([{"a": "plain"}, {"a": "naïve"}])
    assert data == b"a\nplain\n" and [d.error_type for d in dead] == ["NotEncodable"]


def test_without_header_or_columns_columns_are_numbered() -> None:
    records, dead = read({"type": "csv", "header": False}, b"x,1\ny,2\nz\n")
    assert records == [{"column_1": "x", "column_2": "1"}, {"column_1": "y", "column_2": "2"}]
    assert [d.context["line"] for d in dead] == [3]


def test_a_byte_order_mark_is_skipped_and_blank_lines_are_not_rows() -> None:
    records, dead = read("csv", b"\xef\xbb\xbfa,b\n1,2\n\n3,4\n")
    assert records == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}] and dead == []


def test_a_truncated_gzip_csv_fails_after_the_rows_before_the_damage(tmp_path: Path) -> None:
    body = gzip.compress(("a,b\n" + "".join(f"{i},x\n" for i in range(5000))).encode())
    Path("in").mkdir()
    Path("in/cut.csv.gz").write_bytes(body[: len(body) // 2])
    summary = run_job({"job_name": "cut_csv", "runtime": {"batch_size": 100},
                       "source": {"type": "file", "path": "in", "format": "csv"},
                       "destination": {"type": "file", "path": "out"}})
    assert summary.status == "failed" and "cut.csv.gz: cannot read past line" in summary.error
    assert summary.written > 0 and summary.reconciled


@pytest.mark.parametrize("option", [{"encoding": "klingon"}, {"delimiter": ";;"}, {"types": {"n": "integer"}}])
def test_bad_options_fail_validation(option: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="format csv"):
        get_format({"type": "csv", **option})


def test_corrupt_gzip_data_fails_the_partition_naming_the_file(tmp_path: Path) -> None:
    body = bytearray(gzip.compress(("a,b\n" + "".join(f"{i},x\n" for i in range(500))).encode()))
    body[10:12] = b"\xff\xff"  # the first deflate block: zlib reports an invalid block type
    Path("in").mkdir()
    Path("in/bad.csv.gz").write_bytes(bytes(body))
    summary = run_job({"job_name": "corrupt_csv", "source": {"type": "file", "path": "in", "format": "csv"},
                       "destination": {"type": "file", "path": "out"}})
    assert summary.status == "failed" and summary.written == 0
    assert "bad.csv.gz: cannot read past line 0: error: Error -3 while decompressing data" in summary.error
