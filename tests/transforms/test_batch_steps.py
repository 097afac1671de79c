"""Batch-level transforms: dedup, aggregate, sort and sample."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sluice import Batch, ConfigError
from sluice.testing import build


def batch(records: list[dict[str, Any]], partition: str = "p", seq: int = 0) -> Batch:
    return Batch([dict(r) for r in records], partition, seq)


# -- dedup --------------------------------------------------------------------------------------
def test_dedup_by_keys_across_batches_of_the_run() -> None:
    step = build("transform", {"type": "dedup", "keys": ["id", "kind"]})
    first = step.apply(batch([{"id": 1, "kind": "a"}, {"id": 1, "kind": "b"}, {"id": 1, "kind": "a", "x": 2}]))
    second = step.apply(batch([{"id": 1, "kind": "b"}, {"id": 2, "kind": "a"}], partition="q"))
    assert first.records == [] and second.records == [], "scope run holds records until the run ends"
    assert step.flush("p") == []
    assert step.flush(None) == [{"id": 1, "kind": "a"}, {"id": 1, "kind": "b"}, {"id": 2, "kind": "a"}]
    assert step.flush(None) == [], "survivors are emitted once"
    assert step.state_scope() == "run" and type(step).stateless is False


def test_dedup_without_keys_compares_whole_records_in_any_key_order() -> None:
    step = build("transform", {"type": "dedup", "scope": "partition"})
    out = step.apply(batch([{"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 1}]))
    assert out.records == [{"a": 1, "b": 2}, {"a": 1}]


def test_dedup_scope_partition_keeps_partitions_apart_and_frees_them() -> None:
    step = build("transform", {"type": "dedup", "keys": ["id"], "scope": "partition", "window": "exact"})
    assert step.apply(batch([{"id": 1}], "p")).records == [{"id": 1}]
    assert step.apply(batch([{"id": 1}], "q")).records == [{"id": 1}]
    assert step.apply(batch([{"id": 1}], "p")).records == []
    assert step.state_scope() == "partition"
    step.flush("p")
    assert "p" not in step._state._partitions
    assert step.apply(batch([{"id": 1}], "p")).records == [{"id": 1}]  # a fresh start for p's keys


def test_dedup_window_is_bounded_lru() -> None:
    step = build("transform", {"type": "dedup", "keys": ["id"], "scope": "partition", "window": {"max_entries": 2}})
    step.apply(batch([{"id": 1}, {"id": 2}, {"id": 3}]))  # 1 falls out of the window
    assert step.apply(batch([{"id": 1}, {"id": 3}])).records == [{"id": 1}]


def test_dedup_window_forgets_keys_after_ttl() -> None:
    import time

    step = build("transform", {"type": "dedup", "keys": ["id"], "scope": "partition",
                               "window": {"max_entries": 10, "ttl_s": 0.05}})
    assert step.apply(batch([{"id": 1}, {"id": 1}])).records == [{"id": 1}]
    time.sleep(0.08)
    assert step.apply(batch([{"id": 1}])).records == [{"id": 1}]


def test_dedup_is_exact_under_concurrent_partitions() -> None:
    step = build("transform", {"type": "dedup", "keys": ["id"]})

    def work(p: str) -> None:
        for start in range(0, 2000, 100):
            step.apply(batch([{"id": i, "p": p} for i in range(start, start + 100)], p, seq=start // 100))

    threads = [threading.Thread(target=work, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = step.flush(None)
    assert [r["id"] for r in kept] == list(range(2000)), "each id kept exactly once across threads, in order"
    assert {r["p"] for r in kept} == {"p0"}, "the copy of the first partition in key order survives"


def test_dedup_rejects_a_bad_window() -> None:
    with pytest.raises(ConfigError, match="window"):
        build("transform", {"type": "dedup", "window": {"max_entries": 0}})


# -- aggregate ----------------------------------------------------------------------------------
METRICS = {"n": {"op": "count"}, "total": {"op": "sum", "field": "ms"}, "lo": {"op": "min", "field": "ms"},
           "hi": {"op": "max", "field": "ms"}, "mean": {"op": "avg", "field": "ms"},
           "first_host": {"op": "first", "field": "host"}, "last_host": {"op": "last", "field": "host"},
           "with_ms": {"op": "count", "field": "ms"}}


def test_aggregate_groups_and_emits_at_the_end_of_the_run() -> None:
    step = build("transform", {"type": "aggregate", "group_by": ["app", "geo.country"], "metrics": METRICS})
    rows = [{"app": "a", "geo": {"country": "FR"}, "ms": 10, "host": "h1"},
            {"app": "b", "ms": 5, "host": "h2"},
            {"app": "a", "geo": {"country": "FR"}, "ms": 30, "host": "h3"},
            {"app": "a", "geo": {"country": "FR"}, "host": "h4"}]
    out = step.apply(batch(rows[:2]))
    out2 = step.apply(batch(rows[2:], partition="q"))
    assert out.records == [] and out2.records == [], "input records are consumed"
    assert step.flush("p") == [], "emit: run holds groups until the run ends"
    groups = step.flush(None)
    assert groups == [
        {"app": "a", "geo": {"country": "FR"}, "n": 3, "total": 40, "lo": 10, "hi": 30, "mean": 20.0,
         "first_host": "h1", "last_host": "h4", "with_ms": 2},
        {"app": "b", "geo": {"country": None}, "n": 1, "total": 5, "lo": 5, "hi": 5, "mean": 5.0,
         "first_host": "h2", "last_host": "h2", "with_ms": 1},
    ]
    assert step.flush(None) == [], "groups are emitted once"


def test_aggregate_per_partition() -> None:
    step = build("transform", {"type": "aggregate", "group_by": ["app"], "metrics": {"n": {"op": "count"}},
                               "emit": "partition"})
    step.apply(batch([{"app": "a"}, {"app": "a"}], "p"))
    step.apply(batch([{"app": "a"}], "q"))
    assert step.flush("p") == [{"app": "a", "n": 2}]
    assert step.flush("q") == [{"app": "a", "n": 1}]
    assert step.flush(None) == []
    assert step.state_scope() == "partition"


def test_aggregate_dead_letters_values_it_cannot_aggregate() -> None:
    step = build("transform", {"type": "aggregate", "group_by": ["app"],
                               "metrics": {"total": {"op": "sum", "field": "ms"}, "hi": {"op": "max", "field": "v"}}})
    out = step.apply(batch([{"app": "a", "ms": 1, "v": 1}, {"app": "a", "ms": "slow"}, {"app": "a", "ms": True},
                            {"app": "a", "ms": 2, "v": "text"}, {"app": "a", "ms": 4, "v": {"o": 1}}]))
    assert out.records == []
    assert len(out.dead_letters) == 4
    assert all(d.error_type == "AggregateTypeError" for d in out.dead_letters)
    assert step.flush(None) == [{"app": "a", "total": 1, "hi": 1}]


def test_aggregate_metric_needs_a_field() -> None:
    with pytest.raises(ConfigError, match="needs a 'field'"):
        build("transform", {"type": "aggregate", "metrics": {"s": {"op": "sum"}}})


# -- sort ---------------------------------------------------------------------------------------
def test_sort_by_several_keys_with_missing_values_last() -> None:
    rows = [{"a": 2, "b": "x"}, {"b": "y"}, {"a": 1, "b": "z"}, {"a": 2, "b": "w"}, {"a": None, "b": "v"}]
    asc = build("transform", {"type": "sort", "keys": ["a", {"field": "b", "order": "desc"}]}).apply(batch(rows))
    assert [r["b"] for r in asc.records] == ["z", "x", "w", "y", "v"]
    desc = build("transform", {"type": "sort", "keys": ["-a", "b"]}).apply(batch(rows))
    assert [r["b"] for r in desc.records] == ["w", "x", "z", "v", "y"]


def test_sort_orders_mixed_types_without_failing() -> None:
    out = build("transform", {"type": "sort", "keys": ["v"]}).apply(
        batch([{"v": "b"}, {"v": 2}, {"v": [1]}, {"v": 1.5}, {"v": "a"}, {}]))
    assert [r.get("v") for r in out.records] == [1.5, 2, "a", "b", [1], None]


def test_sort_needs_keys() -> None:
    with pytest.raises(ConfigError):
        build("transform", {"type": "sort", "keys": []})


# -- sample -------------------------------------------------------------------------------------
def test_sample_rate_is_deterministic_and_close_to_the_rate() -> None:
    rows = [{"id": i} for i in range(4000)]
    step = build("transform", {"type": "sample", "rate": 0.25, "key": ["id"], "seed": "s1"})
    first = [r["id"] for r in step.apply(batch(rows)).records]
    again = [r["id"] for r in build("transform", {"type": "sample", "rate": 0.25, "key": ["id"], "seed": "s1"})
             .apply(batch(rows[::-1])).records]
    assert sorted(first) == sorted(again), "the same records are picked in any order or partitioning"
    assert 850 < len(first) < 1150
    other = [r["id"] for r in build("transform", {"type": "sample", "rate": 0.25, "key": ["id"], "seed": "s2"})
             .apply(batch(rows)).records]
    assert other != first, "another seed picks other records"


def test_sample_every_n_keeps_about_one_in_n() -> None:
    rows = [{"id": i, "x": "y"} for i in range(3000)]
    kept = build("transform", {"type": "sample", "every": 10}).apply(batch(rows)).records
    assert 220 < len(kept) < 380


def test_sample_needs_exactly_one_of_rate_or_every() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        build("transform", {"type": "sample", "rate": 0.5, "every": 2})
    with pytest.raises(ConfigError, match="rate"):
        build("transform", {"type": "sample", "rate": 1.5})
