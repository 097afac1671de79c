"""The built-in JSON Lines file source and sink."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.testing import build, make_context, read_jsonl, run_job
from sluice.testing.conformance import SinkContract, SourceContract


def write_lines(path: Path, lines: list[str]) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def records(n: int, start: int = 0) -> list[str]:
    return [orjson.dumps({"n": i, "msg": f"m{i}"}).decode() for i in range(start, start + n)]


class TestJsonlSourceContract(SourceContract):
    @pytest.fixture
    def source_block(self, tmp_path: Path) -> dict[str, Any]:
        write_lines(tmp_path / "in/a.jsonl", records(20))
        write_lines(tmp_path / "in/sub/b.jsonl.gz", records(15, 100))
        write_lines(tmp_path / "in/c.jsonl.zst", records(9, 200))
        return {"type": "jsonl", "path": str(tmp_path / "in")}

    @pytest.fixture
    def expected_records(self) -> int:
        return 44


class TestJsonlSinkContract(SinkContract):
    @pytest.fixture(params=["none", "gzip", "zstd"])
    def sink_block(self, request: Any, tmp_path: Path) -> dict[str, Any]:
        return {"type": "jsonl", "path": str(tmp_path / "out"), "compression": request.param,
                "max_records_per_file": 12}

    @pytest.fixture
    def read_back(self, tmp_path: Path) -> Any:
        return lambda: read_jsonl(tmp_path / "out")


def test_malformed_lines_become_dead_letters_with_file_and_line(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "in/x.jsonl", [*records(3), "{oops", "", "[1, 2]", *records(2, 10)])
    summary = run_job({"job_name": "bad_lines", "runtime": {"error_rate_threshold": 1},
                       "source": {"type": "jsonl", "path": str(src)},
                       "destination": {"type": "jsonl", "path": "out"},
                       "dead_letter": {"type": "jsonl", "path": "dead"}})
    assert summary.status == "succeeded" and summary.written == 5 and summary.dead_lettered == {"source": 2}
    dead = sorted(read_jsonl("dead"), key=lambda d: d["context"]["line"])
    assert [(d["context"]["line"], d["record"], d["error_type"]) for d in dead] == [
        (4, "{oops", "JSONDecodeError"), (6, "[1, 2]", "NotAnObject")]
    assert dead[0]["context"]["file"] == str(src.resolve()) and dead[0]["reason"].startswith("line 4: malformed JSON")


def test_a_truncated_gzip_fails_naming_the_file_after_delivering_what_came_before(tmp_path: Path) -> None:
    good = gzip.compress(("\n".join(records(500)) + "\n").encode())
    path = tmp_path / "in/cut.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(good[: len(good) // 2])
    summary = run_job({"job_name": "cut", "runtime": {"batch_size": 50},
                       "source": {"type": "jsonl", "path": str(path)},
                       "destination": {"type": "jsonl", "path": "out"}})
    assert summary.status == "failed"
    assert f"{path.resolve()}: cannot read past line" in summary.error
    assert summary.written > 0 and summary.reconciled


def test_sink_rolls_files_over_and_names_them_by_partition_and_first_batch(tmp_path: Path) -> None:
    write_lines(tmp_path / "in/a.jsonl", records(25))
    summary = run_job({"job_name": "roll", "runtime": {"batch_size": 5},
                       "source": {"type": "jsonl", "path": str(tmp_path / "in")},
                       "destination": {"type": "jsonl", "path": "out", "max_records_per_file": 10,
                                       "compression": "gzip"}})
    assert summary.status == "succeeded"
    names = sorted(p.name for p in Path("out").iterdir())
    assert names == ["_SUCCESS", "_manifest.json", "part-a.jsonl-00000.jsonl.gz", "part-a.jsonl-00002.jsonl.gz",
                     "part-a.jsonl-00004.jsonl.gz"]
    manifest = orjson.loads(Path("out/_manifest.json").read_bytes())
    assert manifest["records"] == 25 and [f["records"] for f in manifest["files"]] == [10, 10, 5]
    assert all(len(f["sha256"]) == 64 for f in manifest["files"])


def test_a_rerun_overwrites_instead_of_adding_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "in/a.jsonl", records(30))
    config = {"job_name": "rerun", "runtime": {"batch_size": 10},
              "source": {"type": "jsonl", "path": str(tmp_path / "in")},
              "destination": {"type": "jsonl", "path": "out", "max_records_per_file": 10}}
    run_job(config)
    first = sorted(p.name for p in Path("out").iterdir())
    config["destination"]["max_records_per_file"] = 30
    run_job(config)
    assert sorted(p.name for p in Path("out").iterdir()) != first  # a different layout replaced the old one
    assert len(read_jsonl("out")) == 30


def test_an_aborted_sink_leaves_no_partial_files_and_no_marker(tmp_path: Path) -> None:
    from sluice import Batch, SinkRun

    sink = build("sink", {"type": "jsonl", "path": str(tmp_path / "out")}, make_context())
    sink.write(Batch([{"a": 1}], "p", 0))
    sink.abort(SinkRun())
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failed_rerun_withdraws_the_earlier_success_marker(tmp_path: Path) -> None:
    write_lines(tmp_path / "in/a.jsonl", records(30))
    config = {"job_name": "rerun_fails", "runtime": {"batch_size": 10},
              "source": {"type": "jsonl", "path": str(tmp_path / "in")},
              "destination": {"type": "jsonl", "path": "out", "max_records_per_file": 10}}
    assert run_job(config).status == "succeeded" and Path("out/_SUCCESS").exists()
    (tmp_path / "in/a.jsonl").write_bytes((tmp_path / "in/a.jsonl").read_bytes()[:-40])  # cut the last line
    (tmp_path / "in/b.jsonl.gz").write_bytes(b"not gzip at all")
    summary = run_job(config)
    assert summary.status == "failed"
    assert not Path("out/_SUCCESS").exists() and not Path("out/_manifest.json").exists()


def test_missing_source_path_is_a_clear_error(tmp_path: Path) -> None:
    summary = run_job({"job_name": "nope", "source": {"type": "jsonl", "path": str(tmp_path / "missing")},
                       "destination": {"type": "jsonl", "path": "out"}})
    assert summary.status == "failed" and f"no such file or directory: {tmp_path / 'missing'}" in summary.error


def test_a_truncated_zstd_file_fails_instead_of_reading_short(tmp_path: Path) -> None:
    import zstandard

    whole = zstandard.ZstdCompressor().compress(("\n".join(records(2000)) + "\n").encode())
    path = tmp_path / "in/cut.jsonl.zst"
    path.parent.mkdir()
    path.write_bytes(whole[: len(whole) // 2])
    summary = run_job({"job_name": "cutzst", "runtime": {"batch_size": 100},
                       "source": {"type": "jsonl", "path": str(path)},
                       "destination": {"type": "jsonl", "path": "out"}})
    assert summary.status == "failed" and "truncated" in summary.error


def test_a_line_that_is_not_utf8_is_dead_lettered_with_its_exact_bytes(tmp_path: Path) -> None:
    import base64

    raw = b'{"n": 1}\n{"n": "caf\xe9 latin-1"}\n{"n": 3}\n'
    (tmp_path / "in").mkdir()
    (tmp_path / "in/a.jsonl").write_bytes(raw)
    summary = run_job({"job_name": "latin1", "runtime": {"error_rate_threshold": 1},
                       "source": {"type": "jsonl", "path": str(tmp_path / "in")},
                       "destination": {"type": "jsonl", "path": "out"},
                       "dead_letter": {"type": "jsonl", "path": "dead"}})
    assert summary.written == 2 and summary.dead_lettered == {"source": 1}
    [dead] = read_jsonl("dead")
    assert dead["context"]["encoding"] == "base64" and dead["error_type"] == "NotUTF8"
    assert base64.b64decode(dead["record"]) == b'{"n": "caf\xe9 latin-1"}'  # replayable byte for byte
    assert dead["reason"].startswith("line 2: not UTF-8")


def test_a_byte_order_mark_at_the_start_of_a_file_is_not_part_of_line_1(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in/bom.jsonl").write_bytes(b'\xef\xbb\xbf{"n": 1}\n{"n": 2}\n')
    summary = run_job({"job_name": "bom", "source": {"type": "jsonl", "path": str(tmp_path / "in")},
                       "destination": {"type": "jsonl", "path": "out"}})
    assert summary.status == "succeeded" and summary.dead_lettered == {}
    assert read_jsonl("out") == [{"n": 1}, {"n": 2}]
