"""The pipeline's books: each stage's time per batch, each partition's counts and time, and retries
by the component that made them; carried in the summary, the exports and the history."""

from __future__ import annotations

from typing import Any

from sluice.history import HistoryStore
from sluice.testing import run_job

from . import fakes
from .helpers import STEPS, expected, job

PER_PARTITION = expected(range(100))
FAST_RETRY = {"attempts": 3, "initial_backoff_s": 0.001, "max_backoff_s": 0.002}


def test_every_batch_is_timed_in_the_stage_it_spent_its_time_in() -> None:
    summary = run_job(job("timed", source={"delay_s": 0.02}))
    assert summary.status == "succeeded"
    times = summary.batch_seconds
    assert {stage: h.count for stage, h in times.items()} == {"source": 20, "transform": 20, "sink": 20}
    # each batch slept 20 ms in the source, none of it in the other stages
    assert dict(times["source"].cumulative())[0.01] == 0 and times["source"].sum >= 20 * 0.02
    assert dict(times["transform"].cumulative())[0.01] == 20
    assert times["sink"].sum < times["source"].sum
    assert summary.to_dict()["batch_seconds"]["sink"]["buckets"]["+Inf"] == 20


def test_a_job_without_transforms_times_no_transform() -> None:
    summary = run_job(job("untransformed", transform={"steps": []}))
    assert summary.status == "succeeded" and summary.written == 200
    assert {stage: h.count for stage, h in summary.batch_seconds.items()} == {"source": 20, "transform": 0,
                                                                              "sink": 20}


def test_each_partition_keeps_its_own_counts_and_time() -> None:
    summary = run_job(job("per_partition", source={"partitions": 3}))
    assert summary.status == "succeeded"
    assert sorted(summary.partition_stats) == ["p0", "p1", "p2"]
    for stats in summary.partition_stats.values():
        assert (stats.read, stats.filtered, stats.dead, stats.written, stats.created) == \
            (100, PER_PARTITION["filtered"], PER_PARTITION["dead"], PER_PARTITION["written"], 0)
        assert stats.duration_s is not None and 0 < stats.duration_s <= summary.duration_s


def test_a_failed_partition_keeps_the_counts_of_what_it_did() -> None:
    summary = run_job(job("half", source={"fail_partition": "p1", "fail_at": 50}))
    assert summary.status == "failed"
    p0, p1 = summary.partition_stats["p0"], summary.partition_stats["p1"]
    assert (p0.read, p0.written) == (100, PER_PARTITION["written"])
    assert (p1.read, p1.written, p1.dead) == (50, expected(range(50))["written"], expected(range(50))["dead"])


def flaky_job(name: str, **overrides: Any) -> dict[str, Any]:
    """Every component retries: the source twice per partition (retry_call), the transform once per
    batch, the destination once per partition (the engine retries its write) and once per batch
    (reported in WriteResult.retries), the dead-letter store once per partition."""
    flaky = job(name, runtime={"retry": FAST_RETRY}, source={"retries": 2},
                transform={"steps": [*STEPS, {"type": "retry_each_batch"}]}, **overrides)
    flaky["destination"] = {"type": "flaky", "name": f"{name}-out", "fail_first_write": True, "reported_retries": 1}
    flaky["dead_letter"] = {"type": "flaky", "name": f"{name}-dead", "fail_first_write": True}
    return flaky


def test_retries_are_counted_for_the_component_that_made_them(history_url: str) -> None:
    fakes.STORES.clear()
    summary = run_job(flaky_job("flaky"))
    assert summary.status == "succeeded", summary.error
    assert len(fakes.STORES["flaky-out"]) == 2 * PER_PARTITION["written"]
    by = {"source": 2 * 2, "transform": 20, "destination": 2 + 20, "dead_letter": 2}
    assert summary.retries_by == by and summary.retries == sum(by.values())
    assert summary.to_dict()["retries_by"] == by

    with HistoryStore(history_url) as store:
        run = store.last("flaky")
        assert run is not None and run.retries_by == by and run.retries == summary.retries
