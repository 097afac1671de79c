"""Stateful steps repeat exactly: ``dedup`` and ``aggregate`` decide by a stated order (``order_by``,
then partition key, then position), never by which partition's thread arrived first, so a re-run
of the interval with any number of workers writes the same files, byte for byte."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice import Batch
from sluice.testing import build, read_jsonl, run_job

ROOT = Path(__file__).resolve().parents[2]


def batch(records: list[dict[str, Any]], partition: str, seq: int = 0) -> Batch:
    return Batch([dict(r) for r in records], partition, seq)


# -- dedup ----------------------------------------------------------------------------------------
def test_dedup_over_the_run_keeps_the_copy_of_the_first_partition_whatever_arrives_first() -> None:
    step = build("transform", {"type": "dedup", "keys": ["id"]})
    # partition "b" gets there first, as it does when "a" is slower to read
    step.apply(batch([{"id": 1, "from": "b"}, {"id": 2, "from": "b"}], "b"))
    step.apply(batch([{"id": 3, "from": "a"}, {"id": 1, "from": "a"}], "a", seq=0))
    step.apply(batch([{"id": 1, "from": "a-later"}], "a", seq=1))
    assert step.flush("a") == [] and step.flush("b") == []
    assert step.flush(None) == [{"id": 3, "from": "a"}, {"id": 1, "from": "a"}, {"id": 2, "from": "b"}]


def test_dedup_order_by_keeps_the_smallest_value_missing_last() -> None:
    step = build("transform", {"type": "dedup", "keys": ["id"], "scope": "partition", "order_by": "ts"})
    step.apply(batch([{"id": 1, "ts": "2024-01-02"}, {"id": 1}, {"id": 2}], "p", seq=0))
    step.apply(batch([{"id": 1, "ts": "2024-01-01"}, {"id": 2, "ts": None}], "p", seq=1))
    assert step.flush("p") == [{"id": 1, "ts": "2024-01-01"}, {"id": 2}], "ties (missing, null) by position"


def test_dedup_holding_records_refuses_ttl_and_caps_the_keys_held() -> None:
    from sluice import ConfigError

    with pytest.raises(ConfigError, match="ttl_s works with scope: partition"):
        build("transform", {"type": "dedup", "window": {"ttl_s": 5}})
    step = build("transform", {"type": "dedup", "keys": ["id"], "window": {"max_entries": 2}})
    with pytest.raises(ConfigError, match=r"more than 2 distinct keys \(window\.max_entries\)"):
        step.apply(batch([{"id": 1}, {"id": 2}, {"id": 1}, {"id": 3}], "p"))


# -- aggregate ------------------------------------------------------------------------------------
METRICS = {"n": {"op": "count"}, "first": {"op": "first", "field": "v"}, "last": {"op": "last", "field": "v"}}


def test_aggregate_first_and_last_follow_partition_key_and_position_not_arrival() -> None:
    step = build("transform", {"type": "aggregate", "group_by": ["g"], "metrics": METRICS})
    step.apply(batch([{"g": "y", "v": "b0"}, {"g": "x", "v": "b1"}], "b"))  # "b" arrives first
    step.apply(batch([{"g": "x", "v": "a0"}], "a", seq=0))
    step.apply(batch([{"g": "x", "v": "a1"}, {"g": "z", "v": "a2"}], "a", seq=1))
    assert step.flush(None) == [
        {"g": "x", "n": 3, "first": "a0", "last": "b1"},  # groups in the order of their first record
        {"g": "z", "n": 1, "first": "a2", "last": "a2"},
        {"g": "y", "n": 1, "first": "b0", "last": "b0"},
    ]


def test_aggregate_order_by_picks_first_and_last_by_the_field() -> None:
    step = build("transform", {"type": "aggregate", "group_by": ["g"], "metrics": METRICS, "order_by": "ts",
                               "emit": "partition"})
    step.apply(batch([{"g": "x", "v": "late", "ts": 30}, {"g": "x", "v": "none"}, {"g": "x", "v": "early", "ts": 10},
                      {"g": "x", "v": "mid", "ts": 20}], "p"))
    assert step.flush("p") == [{"g": "x", "n": 4, "first": "early", "last": "none"}], "missing sorts last"


def test_aggregate_sums_do_not_depend_on_the_order_values_arrive_in() -> None:
    values = [0.1] * 10 + [1e16, 1.0, -1e16, 1e-3, 3]
    results = []
    for ordering in (values, values[::-1], sorted(values)):
        step = build("transform", {"type": "aggregate", "metrics": {"s": {"op": "sum", "field": "v"},
                                                                    "m": {"op": "avg", "field": "v"}}})
        for i, v in enumerate(ordering):
            step.apply(batch([{"v": v}], f"p{i % 3}", seq=i))
        results.append(step.flush(None))
    assert results[0] == results[1] == results[2]
    exact = sum(__import__("fractions").Fraction(v) for v in values)
    assert results[0] == [{"s": float(exact), "m": float(exact / len(values))}], "rounded once, from the exact sum"


def test_aggregate_integer_sums_stay_integers() -> None:
    step = build("transform", {"type": "aggregate", "metrics": {"s": {"op": "sum", "field": "v"},
                                                                "m": {"op": "avg", "field": "v"}}})
    step.apply(batch([{"v": 2}, {"v": 3}, {"v": 10**20}], "p"))
    assert step.flush(None) == [{"s": 10**20 + 5, "m": (10**20 + 5) / 3}]


# -- through the engine, with 1, 2 and 4 workers --------------------------------------------------
def write_partitions(folder: Path) -> None:
    """Partition "a" reaches its duplicates late (after filler); "b" starts with them."""
    folder.mkdir()
    filler = [{"id": f"fill-{i}", "g": f"g{i % 7}", "v": i, "ms": i * 0.1} for i in range(3000)]
    dupes = [{"id": f"dup-{i}", "g": f"g{i % 7}", "v": 10_000 + i, "ms": 1.1} for i in range(50)]
    (folder / "a.jsonl").write_text("\n".join(json.dumps({**r, "src": "a"}) for r in filler + dupes) + "\n")
    (folder / "b.jsonl").write_text("\n".join(json.dumps({**r, "src": "b", "v": -r["v"]}) for r in dupes) + "\n")
    (folder / "c.jsonl").write_text("\n".join(json.dumps({**r, "src": "c"}) for r in dupes[::-1]) + "\n")


def output_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("steps", [
    [{"type": "dedup", "keys": ["id"]}],
    [{"type": "dedup", "keys": ["id"], "order_by": "v"}],
    [{"type": "aggregate", "group_by": ["g"], "metrics": {
        "n": {"op": "count"}, "first_src": {"op": "first", "field": "src"}, "last_src": {"op": "last", "field": "src"},
        "total": {"op": "sum", "field": "ms"}, "mean": {"op": "avg", "field": "ms"}}}],
], ids=["dedup", "dedup order_by", "aggregate"])
def test_reruns_with_any_number_of_workers_write_the_same_files(tmp_path: Path, steps: list[dict[str, Any]]) -> None:
    write_partitions(tmp_path / "in")
    outputs = []
    for i, workers in enumerate([1, 4, 2, 4]):
        out = tmp_path / f"out-{i}"
        summary = run_job({"job_name": "rep", "runtime": {"batch_size": 100, "max_workers": workers},
                           "source": {"type": "jsonl", "path": str(tmp_path / "in")}, "transform": {"steps": steps},
                           "destination": {"type": "jsonl", "path": str(out)},
                           "dead_letter": {"type": "jsonl", "path": str(tmp_path / f"dead-{i}")}})
        assert summary.status == "succeeded" and summary.reconciled, summary.error
        outputs.append(output_of(out))
    assert all(o == outputs[0] for o in outputs[1:]), "every run writes the same files with the same bytes"
    records = read_jsonl(tmp_path / "out-0")
    if steps[0]["type"] == "dedup" and "order_by" not in steps[0]:
        assert {r["src"] for r in records if r["id"].startswith("dup-")} == {"a"}, "partition a comes first"
    if steps[0].get("order_by") == "v":
        assert {r["src"] for r in records if r["id"].startswith("dup-")} == {"b"}, "b holds the smallest v"


def test_the_readme_aggregate_example_reports_the_earliest_and_latest_timestamps(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"#### aggregate\n\n```yaml\n(.*?)```", readme, re.S)
    assert block, "the README has an aggregate example"
    step = yaml.safe_load(block.group(1))[0]
    step["group_by"] = ["app"]
    (tmp_path / "in").mkdir()
    rows = [{"app": "web", "latency_ms": 5, "status": s, "@timestamp": t}
            for s, t in [(500, "2024-01-01T10:00:00Z"), (200, "2024-01-01T08:00:00Z"), (404, "2024-01-01T12:00:00Z")]]
    (tmp_path / "in/a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = run_job({"job_name": "readme", "source": {"type": "jsonl", "path": str(tmp_path / "in")},
                       "transform": {"steps": [step]}, "destination": {"type": "jsonl", "path": str(tmp_path / "o")}})
    assert summary.status == "succeeded", summary.error
    [group] = read_jsonl(tmp_path / "o")
    assert group["first_seen"] == "2024-01-01T08:00:00Z" and group["last_seen"] == "2024-01-01T12:00:00Z"
    assert group.get("first_status", 200) == 200 and group.get("last_status", 404) == 404


def test_aggregate_without_group_by_is_one_group() -> None:
    step = build("transform", {"type": "aggregate", "metrics": {"n": {"op": "count"}}})
    step.apply(batch([{"v": 1}, {"v": 2}, {"v": 1}], "p"))
    assert step.flush(None) == [{"n": 3}]
