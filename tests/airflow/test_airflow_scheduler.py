"""Under a real Airflow (scheduler, dag-processor and api-server; LocalExecutor on SQLite; see
``scheduler.py``): clearing any task of a finished run, alone or with what follows it, leaves the
destination and the dead letters exactly as they were."""

from __future__ import annotations

import gzip
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from scheduler import BUCKET, Airflow, TaskRef, airflow_scheduler  # noqa: F401  (the session fixture)

DAG = "sched_es_to_s3"  # scheduler_jobs/sched_es_to_s3.yaml
INDEX = "sched_logs"
START = datetime(2024, 1, 2, 10, tzinfo=UTC)
END = START + timedelta(hours=1)
FOLDER = "date=2024-01-02/run_id=sched_es_to_s3-20240102T100000-20240102T110000/"
Snapshot = dict[str, Any]


def logs(n: int) -> list[dict[str, Any]]:
    """``n`` documents over 09:00-11:59 on 2024-01-02 (a third in the 10:00 interval); every 7th has an
    ``n`` that does not cast to int."""
    return [{"_id": f"d{i}", "n": f"bad-{i}" if i % 7 == 3 else str(i), "msg": f"message {i}",
             "ts": f"2024-01-02T{9 + i % 3:02d}:{i % 60:02d}:{i % 7:02d}Z"} for i in range(n)]


def bulk_load(url: str, docs: list[dict[str, Any]]) -> None:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    if client.indices.exists(index=INDEX):
        client.indices.delete(index=INDEX)
    lines = []
    for d in docs:
        lines += [orjson.dumps({"index": {"_index": INDEX, "_id": d["_id"]}}),
                  orjson.dumps({k: v for k, v in d.items() if k != "_id"})]
    assert not client.bulk(body=b"\n".join(lines) + b"\n", params={"refresh": "true"})["errors"]
    client.close()


def snapshot(s3: Any) -> tuple[Snapshot, Snapshot]:
    """``(destination, dead letters)`` of the run: key → decompressed lines (parts), parsed JSON
    (manifests) or bytes. Dead letters lose their ``time``, and their manifest the checksums and
    sizes of files that hold it."""
    out: Snapshot = {}
    dead: Snapshot = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents") or ():
            key = o["Key"]
            if not key.startswith(("out/", "dead/")):
                continue
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            value: Any = body
            if key.endswith(".gz"):
                value = [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
            elif key.endswith(".json"):
                value = orjson.loads(body)
            if key.startswith("out/"):
                out[key] = value
                continue
            if key.endswith(".gz"):
                value = [{k: v for k, v in r.items() if k != "time"} for r in value]
            elif key.endswith(".json"):
                value["bytes"] = None
                value["files"] = [{k: v for k, v in f.items() if k not in ("sha256", "etag", "bytes")}
                                  for f in value["files"]]
            dead[key] = value
    return out, dead


def records(snap: Snapshot) -> list[dict[str, Any]]:
    return [r for key, value in snap.items() if key.endswith(".gz") for r in value]


# Clears in turn, each followed by a finished run and an unchanged output: what is cleared, with
# downstream or not, and the task instances Airflow clears then. Tasks cleared together touch
# different partitions or stages, so each still re-runs alone (after the ones it depends on).
# transform and load expand over plan's output, not over extract's: Airflow cannot relate their map
# indexes, so clearing one extract with downstream clears every transform and load.
MAPPED = [(task, i) for task in ("extract", "transform", "load") for i in (0, 1)]
AFTER_EXTRACT = [("finalize", -1), ("load", 0), ("load", 1), ("transform", 0), ("transform", 1)]
CLEARS: list[tuple[str, list[TaskRef], bool, list[tuple[str, int]]]] = [
    ("extract 0, transform 1, load 0 (alone)", [("extract", 0), ("transform", 1), ("load", 0)], False,
     [("extract", 0), ("load", 0), ("transform", 1)]),
    ("extract 1, transform 0, load 1 (alone)", [("extract", 1), ("transform", 0), ("load", 1)], False,
     [("extract", 1), ("load", 1), ("transform", 0)]),
    ("finalize", ["finalize"], False, [("finalize", -1)]),
    ("extract 0 and downstream", [("extract", 0)], True, sorted([("extract", 0), *AFTER_EXTRACT])),
    ("extract 1 and downstream", [("extract", 1)], True, sorted([("extract", 1), *AFTER_EXTRACT])),
    ("plan and downstream", ["plan"], True, sorted([("plan", -1), ("finalize", -1), *MAPPED])),
]


@pytest.mark.slow
def test_clearing_any_task_of_a_finished_run_leaves_destination_and_dead_letters_unchanged(
        airflow_scheduler: Airflow, s3: Any) -> None:  # noqa: F811
    af = airflow_scheduler
    s3.create_bucket(Bucket=BUCKET)
    docs = logs(300)
    bulk_load(af.es_url, docs)
    af.wait_for_dag(DAG)
    began = time.monotonic()
    run_id = af.trigger(DAG, START, END)
    af.wait_run(DAG, run_id)
    timings = [("first run", time.monotonic() - began)]

    tis = af.task_instances(DAG, run_id)
    assert {k: ti["rendered_map_index"] for k, ti in tis.items() if k[1] >= 0} == {
        (task, i): f"slice-{i}-of-2" for task in ("extract", "transform", "load") for i in (0, 1)}
    out, dead = snapshot(s3)
    assert f"out/{FOLDER}_SUCCESS" in out and f"out/{FOLDER}_manifest.json" in out
    in_interval = [d for d in docs if d["ts"].startswith("2024-01-02T10")]
    good = {d["_id"]: {**{k: v for k, v in d.items() if k != "_id"}, "n": int(d["n"]), "hour": "2024-01-02T10"}
            for d in in_interval if not d["n"].startswith("bad")}
    assert {r["_id"]: {k: v for k, v in r.items() if k != "_id"} for r in records(out)} == good
    assert len(records(out)) == len(good) and len([k for k in out if "/part-" in k]) > 2
    letters = records(dead)
    assert sorted(r["record"]["_id"] for r in letters) == sorted(
        d["_id"] for d in in_interval if d["n"].startswith("bad"))
    assert {(r["stage"], r["plugin"], r["error_type"]) for r in letters} == {("transform", "cast", "CastError")}
    assert all("cannot convert" in r["reason"] for r in letters)
    log = af.task_log(DAG, run_id, "extract", 0)  # what a task log tells: interval, progress, the step's counts
    assert f"run {run_id} processes the interval 2024-01-02T10:00:00+00:00 to 2024-01-02T11:00:00+00:00" in log
    assert "partition done" in log and "partition=slice-0-of-2" in log
    assert "step done" in log and "stage=extract" in log and "read=" in log, log
    report = af.xcom(DAG, run_id, "finalize")
    counts = {k: report[k] for k in ("read", "written", "dead_lettered_total")}
    assert counts == {"read": len(in_interval), "written": len(good), "dead_lettered_total": len(letters)}

    for what, tasks, downstream, expected in CLEARS:
        began = time.monotonic()
        cleared = af.rerun(DAG, run_id, tasks, downstream=downstream)
        timings.append((what, time.monotonic() - began))
        assert cleared == expected, what
        again_out, again_dead = snapshot(s3)
        assert f"out/{FOLDER}_SUCCESS" in again_out, f"after clearing {what} ({cleared}) no _SUCCESS"
        assert again_out == out, f"after clearing {what} ({cleared}) the destination changed"
        assert again_dead == dead, f"after clearing {what} ({cleared}) the dead letters changed"
        if "finalize" in [t for t, _ in cleared]:
            again = af.xcom(DAG, run_id, "finalize")
            assert {k: again[k] for k in counts} == counts, f"after clearing {what}: {again}"
    print("\n" + "\n".join(f"{what}: {seconds:.1f} s" for what, seconds in timings))


def runs_of(af: Airflow, dag_id: str) -> list[dict[str, Any]]:
    """Every run of a DAG, oldest first."""
    return sorted(af._paged(f"/api/v2/dags/{dag_id}/dagRuns", "dag_runs"), key=lambda r: r["run_after"] or "")


def write_input(folder: Any, n: int = 30) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.jsonl").write_bytes(b"".join(orjson.dumps({"id": i, "msg": f"event {i}"}) + b"\n"
                                                   for i in range(n)))


@pytest.mark.slow
def test_a_second_run_of_an_interval_fails_at_once_while_another_run_holds_its_lease(
        airflow_scheduler: Airflow, s3: Any, tmp_path: Any) -> None:  # noqa: F811
    """Run A takes the interval's lease and dies in plan (its destination bucket is missing); run B
    of the same interval fails at once naming A. Once A's lease expires, B goes through."""
    af = airflow_scheduler
    s3.create_bucket(Bucket=BUCKET)
    write_input(tmp_path / "in")
    af.write_job("sched_lease.yaml", f"""
job_name: sched_lease
schedule: {{cron: "@hourly", start_date: 2024-01-01, end_date: 2024-01-31, max_active_runs: 2, retries: 0}}
staging: {{uri: "s3://{BUCKET}/staging", lease_ttl: 8}}
source: {{type: jsonl, path: "{tmp_path}/in"}}
destination: {{type: s3, connection: sched_aws, uri: "s3://sluice-sched-late/out"}}
dead_letter: {{type: jsonl, path: "{tmp_path}/dead"}}
""", until=lambda: af.dag("sched_lease"))
    first = af.trigger("sched_lease", START, END)
    af.wait_run("sched_lease", first, expect="failed")
    assert "bucket does not exist" in af.task_log("sched_lease", first, "plan")
    second = af.trigger("sched_lease", START, END, logical_date=START + timedelta(seconds=1))
    af.wait_run("sched_lease", second, expect="failed")
    log = af.task_log("sched_lease", second, "plan")
    assert f"is being run by '{first}'" in log and f"this run ('{second}') stops" in log, log
    assert af.states("sched_lease", second)[("plan", -1)] == "failed"

    s3.create_bucket(Bucket="sluice-sched-late")
    time.sleep(8)  # the dead run stopped renewing: its lease expires after lease_ttl
    af.rerun("sched_lease", second, ["plan"], downstream=True)
    lease = orjson.loads(s3.get_object(Bucket=BUCKET, Key="staging/sched_lease/20240102T100000-20240102T110000/"
                                                          "lease.json")["Body"].read())
    assert lease["owner"] == second and lease["released"]
    out = s3.list_objects_v2(Bucket="sluice-sched-late", Prefix="out/")["Contents"]
    assert any(o["Key"].endswith("_SUCCESS") for o in out)


@pytest.mark.slow
def test_a_typo_in_a_scheduled_job_keeps_its_dag_and_fails_its_next_scheduled_run(
        airflow_scheduler: Airflow, tmp_path: Any) -> None:  # noqa: F811
    af = airflow_scheduler
    write_input(tmp_path / "in")
    job = f"""
job_name: sched_typo
schedule: {{cron: "* * * * *", start_date: 2026-01-01, catchup: false, retries: 0}}
staging: "{tmp_path}/staging"
source: {{type: jsonl, path: "{tmp_path}/in"}}
destination: {{type: jsonl, path: "{tmp_path}/out/{{{{ run_id }}}}", max_records_per_file: 100}}
dead_letter: {{type: jsonl, path: "{tmp_path}/dead"}}
"""
    af.write_job("sched_typo.yaml", job, until=lambda: af.dag("sched_typo"))
    af._wait("a scheduled run of the valid job to succeed",
             lambda: any(r["state"] == "success" and r["run_type"] == "scheduled" for r in runs_of(af, "sched_typo")),
             timeout=150, interval=1)
    ran = {r["dag_run_id"] for r in runs_of(af, "sched_typo")}

    af.write_job("sched_typo.yaml", job.replace("max_records_per_file", "max_records_per_fil"),
                 until=lambda: "sched_typo.yaml" in str(af.import_errors()))
    errors = af.import_errors()
    assert any("sched_typo.yaml" in e and "max_records_per_fil" in e for e in errors.values()), errors
    dag = af.dag("sched_typo")
    assert dag is not None and not dag["is_paused"] and "broken" in {t["name"] for t in dag["tags"]}

    def next_run_failed() -> dict[str, Any] | None:
        """A scheduled run created after the break whose one task failed with the problems (a run
        created just before the new file was parsed may still have the old tasks)."""
        later = [r for r in runs_of(af, "sched_typo") if r["dag_run_id"] not in ran and r["run_type"] == "scheduled"]
        return next((r for r in later if r["state"] == "failed"
                     and af.states("sched_typo", r["dag_run_id"]).get(("job_file_is_broken", -1)) == "failed"), None)

    failed = af._wait("the next scheduled run to fail", next_run_failed, timeout=150, interval=1)
    log = af.task_log("sched_typo", failed["dag_run_id"], "job_file_is_broken")
    assert "max_records_per_fil" in log and "sched_typo.yaml" in log, log
    af.remove_job("sched_typo.yaml")
