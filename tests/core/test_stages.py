"""Staged runs (``sluice.stages``): the steps an orchestrator calls, run here one by one over a
local staging directory, against the plain run of the same job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import fakes
import orjson
import pytest

from sluice import ConfigError, JobFailed
from sluice.config import load_job
from sluice.lease import LeaseHeld
from sluice.stages import StagedRun, run_staged
from sluice.templating import Interval
from sluice.testing import read_jsonl, run_job

DAY = Interval.for_day("2024-01-01")


@pytest.fixture(autouse=True)
def registry(sluice_registry: Any) -> Any:
    fakes.STORES.clear()
    return sluice_registry(fakes)


def write_input(root: Path, files: int = 3, lines: int = 95) -> Path:
    """JSON Lines files with numbered records, a malformed line in the first file."""
    folder = root / "in"
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        rows = [orjson.dumps({"id": f"f{f}-{i}", "n": f * 1000 + i, "msg": f"event {i} of file {f}"}).decode()
                for i in range(lines)]
        if f == 0:
            rows.insert(17, "{not json")
        (folder / f"part{f}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def job(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_name": "staged_test",
        "runtime": {"batch_size": 10, "max_workers": 2, "error_rate_threshold": 0.5},
        "source": {"type": "jsonl", "path": str(tmp_path / "in")},
        "transform": {"steps": [{"type": "drop_every", "every": 10}, {"type": "reject_every", "every": 9}]},
        "destination": {"type": "jsonl", "path": str(tmp_path / "out"), "compression": "gzip",
                        "max_records_per_file": 25},
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
        "staging": {"uri": str(tmp_path / "staging")},
    }
    base.update(overrides)
    return base


def output(tmp_path: Path) -> dict[str, bytes]:
    """Every file of the destination folder."""
    return {p.name: p.read_bytes() for p in sorted((tmp_path / "out").iterdir())}


def dead_records(tmp_path: Path) -> list[bytes]:
    """The dead letters' records and reasons (their store keys differ between plain and staged)."""
    return sorted(orjson.dumps([d["record"], d["reason"], d["stage"]]) for d in read_jsonl(tmp_path / "dead"))


def staged(config: dict[str, Any]) -> Any:
    return run_staged(load_job(config, interval=DAY))


def test_staged_and_fused_runs_write_exactly_what_a_plain_run_writes(tmp_path: Path) -> None:
    write_input(tmp_path)
    plain = run_job(job(tmp_path))
    assert plain.status == "succeeded", plain.error
    want, want_dead = output(tmp_path), dead_records(tmp_path)
    assert len(want) == 2 + 3 * 3 and want_dead  # 3 files of up to 25 per partition, manifest, marker
    for staging in ({"uri": str(tmp_path / "staging")},
                    {"uri": str(tmp_path / "staging"), "transform": "with_extract"},
                    {"uri": str(tmp_path / "staging"), "mode": "fused"}):
        for folder in ("out", "dead"):
            for f in (tmp_path / folder).iterdir():
                f.unlink()
        summary = staged(job(tmp_path, staging=staging))
        assert summary.status == "succeeded", summary.error
        assert output(tmp_path) == want, staging
        assert dead_records(tmp_path) == want_dead, staging
        assert (summary.read, summary.written, summary.filtered, summary.dead_lettered) == \
            (plain.read, plain.written, plain.filtered, plain.dead_lettered)
        assert summary.reconciled


def test_each_step_returns_a_small_manifest_and_keeps_it_in_staging(tmp_path: Path) -> None:
    write_input(tmp_path)
    with StagedRun(load_job(job(tmp_path), interval=DAY)) as run:
        plan = run.plan()
        assert plan["partitions"] == ["part0.jsonl", "part1.jsonl", "part2.jsonl"]
        assert plan["stages"] == ["extract", "transform", "load"]
        manifests = [run.extract(p) for p in plan["partitions"]]
        manifests += [run.transform(p) for p in plan["partitions"]]
        manifests += [run.load(p) for p in plan["load_partitions"]]
        report = run.finalize()
    assert all(len(orjson.dumps(m)) < 4096 for m in [plan, *manifests, report])
    assert manifests[0]["counts"]["read"] == 96 and manifests[0]["counts"]["dead_lettered"] == {"source": 1}
    assert manifests[0]["dead_letter_partitions"] == ["extract-part0.jsonl"]
    assert report["read"] == 96 + 95 + 95 and report["reconciled"] and report["status"] == "succeeded"
    kept = sorted(p.relative_to(tmp_path / "staging").parts[2] for p in (tmp_path / "staging").rglob("*.json"))
    assert {"plan.json", "manifests", "checkpoints"} <= set(kept)


def test_a_step_that_keeps_run_wide_state_runs_once_and_loads_its_total(tmp_path: Path) -> None:
    write_input(tmp_path, files=2, lines=40)
    config = job(tmp_path, transform={"steps": [{"type": "count_all"}]},
                 runtime={"batch_size": 10, "error_rate_threshold": 0.5})
    summary = staged(config)
    assert summary.status == "succeeded", summary.error
    assert [r for r in read_jsonl(tmp_path / "out")] == [{"id": "total", "n": -1, "count": 80}]
    assert summary.created == 1 and summary.reconciled
    with pytest.raises(ConfigError, match="keeps state over the whole run"):
        StagedRun(load_job(job(tmp_path, transform=config["transform"],
                               staging={"uri": str(tmp_path / "s"), "mode": "fused"}), interval=DAY))


def test_load_refuses_to_write_when_the_steps_before_it_exceed_the_error_rate(tmp_path: Path) -> None:
    write_input(tmp_path)
    config = job(tmp_path, runtime={"batch_size": 10, "error_rate_threshold": 0.05})  # ~11% are rejected
    with StagedRun(load_job(config, interval=DAY)) as run:
        plan = run.plan()
        for p in plan["partitions"]:
            run.extract(p)
            run.transform(p)
        with pytest.raises(JobFailed, match=r"exceeds error_rate_threshold 5.00%; nothing was loaded"):
            run.load(plan["partitions"][0])
    assert not (tmp_path / "out").exists()
    assert read_jsonl(tmp_path / "dead")  # written by the steps, findable before finalize


def test_any_step_re_run_alone_leaves_the_same_output(tmp_path: Path) -> None:
    write_input(tmp_path)
    config = job(tmp_path)
    with StagedRun(load_job(config, interval=DAY)) as run:
        plan = run.plan()
        for step in (run.extract, run.transform, run.load):
            for p in plan["partitions"]:
                step(p)
        run.finalize()
        want, want_dead = output(tmp_path), dead_records(tmp_path)
        for step in (run.plan, lambda: run.extract("part1.jsonl"), lambda: run.transform("part1.jsonl"),
                     lambda: run.load("part2.jsonl"), run.finalize):
            step()
            assert output(tmp_path) == want
            assert dead_records(tmp_path) == want_dead


def test_finalize_names_the_steps_that_have_not_run(tmp_path: Path) -> None:
    write_input(tmp_path)
    with StagedRun(load_job(job(tmp_path), interval=DAY)) as run:
        with pytest.raises(JobFailed, match="no plan in staging"):
            run.finalize()
        plan = run.plan()
        run.extract(plan["partitions"][0])
        with pytest.raises(JobFailed, match=r"transform needs extract of 'part1.jsonl'"):
            run.transform("part1.jsonl")
        with pytest.raises(JobFailed, match=r"extract has not finished for 2 partition\(s\)"):
            run.finalize()


def test_finalize_fails_when_the_counts_of_the_steps_do_not_add_up(tmp_path: Path) -> None:
    write_input(tmp_path, files=1)
    with StagedRun(load_job(job(tmp_path), interval=DAY)) as run:
        plan = run.plan()
        p = plan["partitions"][0]
        run.extract(p)
        run.transform(p)
        run.load(p)
        key = run._manifest_key("transform", p)
        manifest = run.store.get_json(key)
        manifest["counts"]["written"] += 3  # as if records went missing between transform and load
        run.store.put_json(key, manifest)
        with pytest.raises(JobFailed, match="load read 75 records but transform staged 78"):
            run.finalize()
    assert not (tmp_path / "out/_SUCCESS").exists()


def test_a_run_whose_staging_was_removed_after_its_retention_says_so(tmp_path: Path) -> None:
    write_input(tmp_path, files=1)
    config = job(tmp_path, staging={"uri": str(tmp_path / "staging"), "retention": 0})
    assert staged(config).status == "succeeded"
    assert [p.name for p in (tmp_path / "staging/staged_test").iterdir()] == ["_runs"]
    with StagedRun(load_job(config, interval=DAY)) as run:
        with pytest.raises(JobFailed, match=r"its staging was removed after staging\.retention; run the whole"):
            run.load("part0.jsonl")
    assert (tmp_path / "out/_SUCCESS").exists()  # nothing was touched


def test_sluice_run_staged_from_the_command_line(tmp_path: Path) -> None:
    write_input(tmp_path, files=2)
    config = job(tmp_path, transform={"steps": []})
    path = tmp_path / "job.json"
    path.write_bytes(orjson.dumps(config))
    result = subprocess.run([sys.executable, "-m", "sluice.cli", "run", str(path), "--ds", "2024-01-01", "--staged"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["written"] == 190 and summary["reconciled"]
    assert len(read_jsonl(tmp_path / "out")) == 190


def test_a_second_run_of_the_interval_fails_at_once_while_the_first_holds_the_lease(tmp_path: Path) -> None:
    write_input(tmp_path, files=2)
    job_ = load_job(job(tmp_path), interval=DAY)
    with StagedRun(job_, owner="scheduled__2024-01-02") as first, StagedRun(job_, owner="manual__x") as second:
        plan = first.plan()
        with pytest.raises(LeaseHeld, match=r"is being run by 'scheduled__2024-01-02' .* this run \('manual__x'\) "
                                            r"stops"):
            second.plan()
        with pytest.raises(LeaseHeld):
            second.extract(plan["partitions"][0])
        for step in (first.extract, first.transform, first.load):
            for p in plan["partitions"]:
                step(p)  # the holder's own steps renew the lease
        first.finalize()  # releases it
        assert second.plan()["partitions"] == plan["partitions"]


def test_a_lease_that_was_not_renewed_expires_and_another_run_takes_it_over(tmp_path: Path) -> None:
    from datetime import timedelta

    from sluice.lease import Lease
    from sluice.staging import LocalStagingStore

    store = LocalStagingStore(tmp_path / "staging")
    dead = Lease(store, "j/i/lease.json", "run-that-died", timedelta(seconds=0.2), "job 'j'")
    dead.acquire()
    alive = Lease(store, "j/i/lease.json", "new-run", timedelta(seconds=5), "job 'j'")
    with pytest.raises(LeaseHeld):
        alive.acquire()
    import time

    time.sleep(0.3)
    alive.acquire()
    with pytest.raises(LeaseHeld, match="is being run by 'new-run'"):
        dead.acquire()


def test_a_long_step_keeps_renewing_its_lease(tmp_path: Path) -> None:
    import time
    from datetime import timedelta

    from sluice.lease import Lease
    from sluice.staging import LocalStagingStore

    store = LocalStagingStore(tmp_path / "staging")
    mine = Lease(store, "j/i/lease.json", "long-run", timedelta(seconds=0.3), "job 'j'")
    other = Lease(store, "j/i/lease.json", "other", timedelta(seconds=5), "job 'j'")
    with mine.held():
        for _ in range(4):  # well past the ttl: the heartbeat renews it
            time.sleep(0.25)
            with pytest.raises(LeaseHeld):
                other.acquire()
    mine.release()
    other.acquire()


def test_two_processes_racing_for_a_free_lease_get_it_once(tmp_path: Path) -> None:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        won = pool.starmap(_try_lease, [(str(tmp_path / "staging"), f"run-{i}") for i in range(8)])
    assert sum(won) == 1


def _try_lease(root: str, owner: str) -> bool:
    from datetime import timedelta

    from sluice.lease import Lease
    from sluice.staging import LocalStagingStore

    try:
        Lease(LocalStagingStore(root), "j/i/lease.json", owner, timedelta(minutes=1), "job 'j'").acquire()
    except LeaseHeld:
        return False
    return True
