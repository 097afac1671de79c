"""The engine: reconciliation, dead letters, backpressure, retries, resume, process pool."""

from __future__ import annotations

from typing import Any

import fakes
import pytest

from sluice.testing import read_jsonl, run_job


@pytest.fixture(autouse=True)
def registry(sluice_registry: Any) -> Any:
    fakes.STORES.clear()
    fakes.CountingSource.live = fakes.CountingSource.max_live = 0
    return sluice_registry(fakes)


def job(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_name": "engine_test",
        "runtime": {"batch_size": 10, "max_workers": 2, "max_in_flight_batches": 4,
                    "retry": {"attempts": 3, "initial_backoff_s": 0.01, "max_backoff_s": 0.02}},
        "source": {"type": "counting", "partitions": 2, "records": 100},
        "destination": {"type": "memory"},
        "dead_letter": {"type": "jsonl", "path": "dead"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def test_every_record_is_written_once_and_the_summary_reconciles() -> None:
    summary = run_job(job())
    assert summary.status == "succeeded", summary.error
    assert (summary.read, summary.written, summary.in_flight) == (200, 200, 0)
    assert summary.reconciled and summary.partitions_done == 2
    store = fakes.STORES["default"]
    assert len(store["records"]) == 200 and store["committed"] and not store["aborted"]


def test_filtered_rejected_and_sink_refused_records_reconcile_per_step_and_stage() -> None:
    summary = run_job(job(
        runtime={"error_rate_threshold": 0.5},
        transform={"steps": [{"type": "drop_every", "every": 10}, {"type": "reject_every", "every": 3}]},
        destination={"type": "memory", "reject_field": "bad"},
    ))
    assert summary.status == "succeeded", summary.error
    # per partition of 100: 10 filtered (n%10==0); of the 34 multiples of 3, 4 were filtered before
    # (0, 30, 60, 90) → 30 rejected, plus n == 7 raising KeyError → 31 dead letters in step 1
    assert summary.filtered == {"steps[0]:drop_every": 20}
    assert summary.dead_lettered == {"steps[1]:reject_every": 62}
    assert summary.written == 200 - 20 - 62
    assert summary.reconciled


def test_dead_letters_carry_the_record_reason_stage_and_run() -> None:
    run_job(job(runtime={"error_rate_threshold": 1}, transform={"steps": [{"type": "reject_every", "every": 50}]}))
    dead = read_jsonl("dead")
    assert len(dead) == 2 * 3  # n in {0, 50} rejected, n == 7 raised, per partition
    by_reason = {d["error_type"] for d in dead}
    assert by_reason == {"TooRound", "KeyError"}
    one = next(d for d in dead if d["error_type"] == "TooRound")
    assert one["record"]["n"] in (0, 50) and "multiple of 50" in one["reason"]
    assert one["stage"] == "transform" and one["plugin"] == "reject_every" and one["step"] == 0
    assert one["job"] == "engine_test" and one["run_id"] == "engine_test-20240101T000000-20240102T000000"
    assert one["partition"] in ("p0", "p1") and one["time"]


def test_sink_refusals_are_dead_lettered_with_the_sink_stage() -> None:
    fakes_job = job(runtime={"error_rate_threshold": 1}, destination={"type": "memory", "reject_field": "pad"},
                    source={"type": "counting", "partitions": 1, "records": 5, "payload": 1})
    summary = run_job(fakes_job)
    assert summary.dead_lettered == {"sink": 5} and summary.written == 0 and summary.reconciled
    assert {d["stage"] for d in read_jsonl("dead")} == {"sink"}


def test_error_rate_over_the_threshold_fails_the_run_but_keeps_the_dead_letters() -> None:
    summary = run_job(job(runtime={"error_rate_threshold": 0.05},
                          transform={"steps": [{"type": "reject_every", "every": 5}]}))
    assert summary.status == "failed"
    assert "error rate" in summary.error and "exceeds error_rate_threshold 5.00%" in summary.error
    assert summary.reconciled
    assert len(read_jsonl("dead")) == summary.dead_lettered_total
    store = fakes.STORES["default"]
    assert store["aborted"] and not store["committed"]  # no success marker for a failed run


def test_a_slow_sink_holds_the_source_back_to_max_in_flight_batches() -> None:
    summary = run_job(job(
        runtime={"batch_size": 5, "max_workers": 3, "max_in_flight_batches": 3},
        source={"type": "counting", "partitions": 3, "records": 60},
        destination={"type": "memory", "delay_s": 0.01},
    ))
    assert summary.status == "succeeded"
    assert 1 <= fakes.CountingSource.max_live <= 3


def test_memory_stays_bounded_by_in_flight_batches_not_input_size() -> None:
    import tracemalloc

    def peak(records: int) -> int:
        tracemalloc.start()
        summary = run_job(job(
            runtime={"batch_size": 50, "max_workers": 2, "max_in_flight_batches": 2},
            source={"type": "counting", "partitions": 2, "records": records, "payload": 2000},
            destination={"type": "memory", "name": f"n{records}", "delay_s": 0.001},
            transform={"steps": [{"type": "count_per_partition"}]},  # consumes records: the sink keeps nothing
        ))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert summary.status == "succeeded", summary.error
        return top

    small, large = peak(200), peak(2000)
    # ten times the input; a bounded pipeline peaks at about the same memory (2 batches of 50 x 2 KB ≈ 200 KB)
    assert large < small * 2 + 1_000_000, (small, large)


def test_transient_sink_failures_are_retried_and_counted() -> None:
    summary = run_job(job(destination={"type": "memory", "fail_on_seq": 2, "fail_times": 2, "transient": True}))
    assert summary.status == "succeeded", summary.error
    assert summary.retries >= 2
    assert summary.written == 200 and len(fakes.STORES["default"]["records"]) == 200


def test_a_failing_sink_fails_the_run_naming_the_partition_and_checkpoint_and_resume_finishes_it() -> None:
    failing = job(source={"type": "counting", "partitions": 1, "records": 100},
                  destination={"type": "memory", "fail_on_seq": 4})
    summary = run_job(failing)
    assert summary.status == "failed"
    assert "'p0'" in summary.error and "checkpoint: 40" in summary.error and "--resume" in summary.error
    assert summary.failures[0].checkpoint == 40 and summary.failures[0].seq == 3
    store = fakes.STORES["default"]
    assert len(store["records"]) == 40 and store["aborted"]

    fixed = job(source={"type": "counting", "partitions": 1, "records": 100}, destination={"type": "memory"})
    resumed = run_job(fixed, resume=True)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.read == 60  # only what was not yet durable
    assert len(store["records"]) == 100
    assert [seq for _, seq in store["batches"]] == list(range(10))  # each batch written exactly once


def test_a_failing_source_keeps_what_it_delivered_and_resume_continues_after_it() -> None:
    summary = run_job(job(source={"type": "counting", "partitions": 2, "records": 100, "fail_after_batches": 3}))
    assert summary.status == "failed" and "source broke" in summary.error
    assert len(fakes.STORES["default"]["records"]) == 60  # 3 batches of 10 from each partition
    resumed = run_job(job(source={"type": "counting", "partitions": 2, "records": 100}), resume=True)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.read == 140 and len(fakes.STORES["default"]["records"]) == 200


def test_resume_skips_finished_partitions() -> None:
    run_job(job())
    again = run_job(job(), resume=True)
    assert again.status == "succeeded" and again.read == 0 and again.partitions_done == 2


def test_without_resume_a_run_starts_over() -> None:
    run_job(job())
    again = run_job(job())
    assert again.read == 200


def test_buffering_sink_checkpoints_only_after_the_partition_is_durable() -> None:
    summary = run_job(job(source={"type": "counting", "partitions": 1, "records": 50},
                          destination={"type": "memory", "buffer": True, "fail_on_seq": 3}))
    assert summary.status == "failed"
    assert summary.failures[0].checkpoint is None  # nothing was durable yet: resume starts over
    resumed = run_job(job(source={"type": "counting", "partitions": 1, "records": 50},
                          destination={"type": "memory", "buffer": True}), resume=True)
    assert resumed.read == 50 and len(fakes.STORES["default"]["records"]) == 50


def test_a_sink_that_loses_a_record_fails_the_partition() -> None:
    summary = run_job(job(destination={"type": "memory", "lose_one": True}))
    assert summary.status == "failed" and "refusing to lose any" in summary.error


def test_records_created_at_partition_end_are_counted_and_written() -> None:
    summary = run_job(job(transform={"steps": [{"type": "count_per_partition"}]}))
    assert summary.status == "succeeded", summary.error
    assert summary.created == 2 and summary.filtered == {"steps[0]:count_per_partition": 200}
    assert summary.written == 2 and summary.reconciled
    records = fakes.STORES["default"]["records"]
    assert records["count-p0"]["count"] == 100 and records["count-p1"]["count"] == 100


def test_resume_restarts_partitions_when_a_step_keeps_partition_state() -> None:
    failing = job(source={"type": "counting", "partitions": 1, "records": 100},
                  transform={"steps": [{"type": "drop_every", "every": 1000}, {"type": "count_per_partition"}]},
                  destination={"type": "memory", "fail_on_seq": 10})  # seq 10: the count emitted at the end
    assert run_job(failing).status == "failed"
    fixed = {**failing, "destination": {"type": "memory"}}
    resumed = run_job(fixed, resume=True)
    assert resumed.read == 100  # the count must cover the whole partition, so it starts over
    assert fakes.STORES["default"]["records"]["count-p0"]["count"] == 99  # n == 0 is filtered by step 0


def test_transforms_can_run_in_a_process_pool() -> None:
    import os

    summary = run_job(job(transform={"processes": 2, "steps": [{"type": "tag_pid"}]}))
    assert summary.status == "succeeded", summary.error
    pids = {r["pid"] for r in fakes.STORES["default"]["records"].values()}
    assert pids and os.getpid() not in pids


def test_a_stateful_step_cannot_run_in_a_process_pool() -> None:
    from sluice.config import load_job
    from sluice.errors import ConfigError

    with pytest.raises(ConfigError, match=r"steps\[0\] \(type: count_per_partition\) keeps state"):
        load_job(job(transform={"processes": 2, "steps": [{"type": "count_per_partition"}]}))


def test_a_source_that_cannot_start_fails_the_run_with_its_message() -> None:
    config = job()
    config["source"] = {"type": "jsonl", "path": "/nonexistent/dir"}
    summary = run_job(config)
    assert summary.status == "failed" and "no such file or directory: /nonexistent/dir" in summary.error


def test_a_bug_in_a_sink_fails_at_once_naming_the_component_and_its_code_without_suggesting_resume() -> None:
    summary = run_job(job(source={"type": "counting", "partitions": 1, "records": 50},
                          destination={"type": "memory", "bug_on_seq": 2}))
    assert summary.status == "failed"
    assert fakes.STORES["default"]["calls"] == 3 and summary.retries == 0  # batches 0, 1, then the bug: no retry
    assert "destination (type: memory) raised TypeError: 'Batch' object is not iterable (a bug, not retried" \
        in summary.error
    assert "fakes.py:" in summary.error and "in _count_records: return WriteResult(written=len([r for r in batch]))" \
        in summary.error
    assert "engine.py" not in summary.error and "--resume" not in summary.error


def test_a_bug_in_a_batch_transform_names_the_step() -> None:
    summary = run_job(job(transform={"steps": [{"type": "drop_every", "every": 10}, {"type": "count_all"}]},
                          source={"type": "counting", "partitions": 1, "records": 20},
                          runtime={"batch_size": 10}), ds="2024-01-01")
    assert summary.status == "succeeded"  # the healthy case, for contrast
    broken = job(transform={"steps": [{"type": "count_all", "explode": True}]},
                 source={"type": "counting", "partitions": 1, "records": 20})
    failed = run_job(broken)
    assert "transform.steps[0] (type: count_all) raised ZeroDivisionError" in failed.error
    assert "fakes.py:" in failed.error and "--resume" not in failed.error


def test_transient_and_permanent_failures_follow_one_rule() -> None:
    from sluice import PermanentError, TransientError
    from sluice.errors import is_transient

    assert is_transient(TransientError("429")) and is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert not is_transient(PermanentError("400")) and not is_transient(TypeError("bug"))
    assert not is_transient(KeyError("bug")) and not is_transient(OSError("disk full"))


def test_a_missing_secret_says_the_same_in_a_transform_process_as_in_the_run() -> None:
    reasons = []
    for processes in (0, 1):
        summary = run_job(job(runtime={"error_rate_threshold": 1},
                              source={"type": "counting", "partitions": 1, "records": 3},
                              transform={"processes": processes,
                                         "steps": [{"type": "stamp", "value": "{{ secret('SLUICE_TEST_NOPE') }}"}]}))
        assert summary.dead_lettered_total == 3, summary.error
        reasons.append({d["reason"] for d in read_jsonl("dead") if d["partition"] == "p0"})
    assert reasons[0] == reasons[1]
    [reason] = reasons[0]
    assert reason.startswith("TemplateError: stamp.value: secret 'SLUICE_TEST_NOPE' is not set"), reason


def test_garbage_left_by_earlier_work_is_collected_not_frozen_by_a_run() -> None:
    """A process that runs job after job (a soak, a service) must not keep each run's garbage."""
    import gc
    import weakref

    class Node:
        pass

    gc.disable()  # only the collections the engine asks for
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
        gone = weakref.ref(a)
        del a, b
        assert run_job(job()).status == "succeeded"
        assert gone() is None
    finally:
        gc.enable()


def test_retries_of_a_sinks_run_level_calls_are_counted_for_the_destination() -> None:
    summary = run_job(job(destination={"type": "memory", "fail_prepare": 2}))
    assert summary.status == "succeeded", summary.error
    assert summary.retries_by.get("destination") == 2 and summary.retries_by.get("other", 0) == 0
