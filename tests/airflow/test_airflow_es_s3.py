"""End to end against real servers: OpenSearch (osmem) → S3 (moto) and S3 → OpenSearch, through
``dag.test()``, with credentials from Airflow connections."""

from __future__ import annotations

import gzip
from datetime import timedelta
from typing import Any

import orjson
from af_helpers import day, run_interval, states, xcom, xcoms

from conftest import BUCKET

HOUR = timedelta(hours=1)


def logs(n: int) -> list[dict[str, Any]]:
    """``n`` documents spread over 10:00-13:00 on 2024-01-02."""
    return [{"_id": f"d{i}", "n": i, "msg": f"message {i}", "ts": f"2024-01-02T{10 + i % 3}:{i % 60:02d}:00Z"}
            for i in range(n)]


def bulk_load(url: str, index: str, docs: list[dict[str, Any]]) -> None:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    lines = []
    for d in docs:
        lines += [orjson.dumps({"index": {"_index": index, "_id": d["_id"]}}),
                  orjson.dumps({k: v for k, v in d.items() if k != "_id"})]
    assert not client.bulk(body=b"\n".join(lines) + b"\n", params={"refresh": "true"})["errors"]
    client.close()


def fetch_all(url: str, index: str) -> dict[str, dict[str, Any]]:
    """Every document of ``index`` as a search sees it (no manual refresh: the job's commit refreshes)."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    hits = client.search(index=index, body={"size": 10_000})["hits"]["hits"]
    client.close()
    return {h["_id"]: h["_source"] for h in hits}


def refreshes(proxy: Any) -> list[str]:
    """The paths of the ``_refresh`` requests the proxy in front of the cluster saw."""
    return [seen.path.split("?")[0] for seen in proxy.seen if "/_refresh" in seen.path]


def objects(s3: Any, prefix: str) -> dict[str, bytes]:
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents") or ():
            out[o["Key"]] = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
    return out


def records(objs: dict[str, bytes]) -> list[dict[str, Any]]:
    out = []
    for key, body in objs.items():
        if key.rsplit("/", 1)[-1].startswith("part-"):
            out += [orjson.loads(line) for line in gzip.decompress(body).splitlines() if line.strip()]
    return out


def test_es_to_s3_writes_each_hour_to_its_own_folder_and_reruns_identically(get_dag, connections, s3):
    docs = logs(90)
    bulk_load(connections["es"], "logs", docs)
    dag = get_dag("es_to_s3")
    for hour in (10, 11):
        dr = run_interval(dag, day("2024-01-02") + hour * HOUR, HOUR)
        assert dr.state == "success", states(dr)
        assert sorted(k for k in states(dr) if k[0] == "extract") == [("extract", 0), ("extract", 1)]
    for hour in (10, 11):
        folder = f"out/date=2024-01-02/run_id=es_to_s3-20240102T{hour}0000-20240102T{hour + 1}0000/"
        objs = objects(s3, folder)
        assert {folder + "_SUCCESS", folder + "_manifest.json"} <= objs.keys()
        want = sorted(({"_id": d["_id"], "n": d["n"], "msg": d["msg"], "ts": d["ts"], "hour": f"2024-01-02T{hour}"}
                       for d in docs if d["ts"].startswith(f"2024-01-02T{hour}")), key=lambda r: r["n"])
        assert sorted(records(objs), key=lambda r: r["n"]) == want
        assert orjson.loads(objs[folder + "_manifest.json"])["records"] == 30
    staged = objects(s3, "staging/")  # kept for staging.retention: a cleared task finds what it needs
    assert "staging/es_to_s3/_runs/20240102T100000-20240102T110000.json" in staged
    assert any(k.startswith("staging/es_to_s3/20240102T100000-20240102T110000/records/") for k in staged)
    assert objects(s3, "dead/") == {}

    before = objects(s3, "out/")
    again = run_interval(dag, day("2024-01-02") + 10 * HOUR, HOUR)
    assert again.state == "success", states(again)
    after = objects(s3, "out/")
    assert after.keys() == before.keys()
    parts = sorted(k for k in before if "/part-" in k)
    assert [gzip.decompress(after[k]) for k in parts] == [gzip.decompress(before[k]) for k in parts]

    values = [v for _, _, v in xcoms(again)]
    assert all(len(orjson.dumps(v, default=str)) < 4096 for v in values)
    dumped = orjson.dumps(values, default=str)
    assert b"af-secret-key-9f3c" not in dumped and b"af-key-id" not in dumped


def test_s3_to_es_loads_each_partition_in_its_own_task_and_refreshes_at_finalize(
        get_dag, connections, s3, local_env, fault_proxy, monkeypatch, osmem_clone):
    proxy = fault_proxy(str(osmem_clone.url))  # the cluster as the job sees it: every request is recorded
    monkeypatch.setenv("AIRFLOW_CONN_TEST_ES", orjson.dumps(
        {"conn_type": "elasticsearch", "host": "127.0.0.1", "port": int(proxy.url.rsplit(":", 1)[1])}).decode())
    docs = [{"_id": f"e{i}", "n": i, "msg": f"hello {i}"} for i in range(50)]
    for f in range(5):  # five objects, two per partition: three extract and three load tasks
        body = b"".join(orjson.dumps(d) + b"\n" for d in docs[f::5])
        s3.put_object(Bucket=BUCKET, Key=f"in/date=2024-01-02/events-{f}.jsonl", Body=body)
    s3.put_object(Bucket=BUCKET, Key="in/date=2024-01-03/other.jsonl", Body=b'{"_id": "x", "n": -1}\n')
    dag = get_dag("s3_to_es")
    dr = run_interval(dag, day("2024-01-02"))
    assert dr.state == "success", states(dr)
    assert len([k for k in states(dr) if k[0] == "extract"]) == 3
    assert len([k for k in states(dr) if k[0] == "load"]) == 3
    assert refreshes(proxy) == ["/events/_refresh"]  # once, by finalize's commit, though no task wrote there
    want = {d["_id"]: {"n": d["n"], "message": d["msg"]} for d in docs}
    assert fetch_all(connections["es"], "events") == want
    again = run_interval(dag, day("2024-01-02"))
    assert again.state == "success", states(again)
    assert fetch_all(connections["es"], "events") == want  # ids are stable: no duplicates
    assert xcom(again, "finalize")["written"] == 50


def test_fused_and_staged_runs_of_one_job_write_the_same_documents(get_dag, connections, s3, local_env):
    from opensearchpy import OpenSearch

    docs = [{"_id": f"e{i}", "n": i, "msg": f"hello {i}"} for i in range(60)]
    for f in range(3):
        body = b"".join(orjson.dumps(d) + b"\n" for d in docs[f::3])
        s3.put_object(Bucket=BUCKET, Key=f"in/date=2024-01-04/events-{f}.jsonl", Body=body + b"{oops\n")
    results = {}
    for dag_id in ("s3_to_es", "s3_to_es_fused"):
        dr = run_interval(get_dag(dag_id), day("2024-01-04"))
        assert dr.state == "success", states(dr)
        results[dag_id] = (fetch_all(connections["es"], "events"), xcom(dr, "finalize"))
        client = OpenSearch(hosts=[connections["es"]])
        client.indices.delete(index="events")
        client.close()
    staged, fused = results["s3_to_es"], results["s3_to_es_fused"]
    assert staged[0] == fused[0] and len(staged[0]) == 60
    assert {k for k in states(dr) if k[0] == "run"} == {("run", 0), ("run", 1)}
    for key in ("read", "written", "dead_lettered_total", "reconciled"):
        assert staged[1][key] == fused[1][key], key
    assert staged[1]["dead_lettered_total"] == 3 and staged[1]["stages"].keys() == {"extract", "transform", "load"}
    assert fused[1]["stages"].keys() == {"run"}
