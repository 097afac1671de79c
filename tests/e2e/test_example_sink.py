"""The example third-party sink (``examples/sink-plugin``, pip-installed by ``make install``): it
passes the sink contract, runs in a job by its ``type:`` through the entry point, and is the code
the README shows."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.testing.conformance import SinkContract

REPO = Path(__file__).resolve().parents[2]
SINK = REPO / "examples/sink-plugin/src/sluice_example_csv/sink.py"


def read_csv(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("part-*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows.extend(csv.DictReader(f))
    return rows


class TestCsvSink(SinkContract):
    @pytest.fixture
    def sink_block(self, tmp_path: Path) -> dict[str, Any]:
        return {"type": "csv", "path": str(tmp_path / "out"), "columns": ["_id", "n", "name", "tags"]}

    @pytest.fixture
    def read_back(self, tmp_path: Path) -> Any:
        def rows() -> list[dict[str, Any]]:
            return [{"_id": r["_id"], "n": int(r["n"]), "name": r["name"], "tags": orjson.loads(r["tags"])}
                    for r in read_csv(tmp_path / "out")]

        return rows


def test_a_job_uses_the_sink_by_its_type_with_dead_letters_for_records_missing_a_field(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [
        {"id": 1, "city": "Oslo", "temp": -3.5}, {"id": 2, "temp": 20}, {"id": 3, "city": "Lima, PE", "temp": None}]))
    (tmp_path / "job.yaml").write_text(f"""
job_name: to_csv
runtime: {{error_rate_threshold: 0.5}}
source: {{type: jsonl, path: "{tmp_path}/in.jsonl"}}
destination: {{type: csv, path: "{tmp_path}/out", columns: [id, city, temp], required: [city]}}
dead_letter: {{type: jsonl, path: "{tmp_path}/dead"}}
""")
    sluice = str(Path(sys.executable).with_name("sluice"))
    result = subprocess.run([sluice, "run", str(tmp_path / "job.yaml"), "--ds", "2024-01-01"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["written"], summary["dead_lettered"], summary["reconciled"]) == (2, {"sink": 1}, True)
    assert read_csv(tmp_path / "out") == [{"id": "1", "city": "Oslo", "temp": "-3.5"},
                                          {"id": "3", "city": "Lima, PE", "temp": ""}]
    assert (tmp_path / "out/_SUCCESS").exists()
    [dead] = [orjson.loads(line) for p in (tmp_path / "dead").glob("part-*") for line in p.read_bytes().splitlines()]
    assert dead["record"] == {"id": 2, "temp": 20} and dead["reason"] == "missing required field(s) ['city']"


def test_the_readme_shows_the_shipped_sink() -> None:
    readme = (REPO / "README.md").read_text()
    body = SINK.read_text().split('"""', 2)[2].replace("from __future__ import annotations\n\n", "").strip()
    assert body in readme, "README's sink example differs from examples/sink-plugin"
