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
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"size": 10_000})["hits"]["hits"]
    client.close()
    return {h["_id"]: h["_source"] for h in hits}


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
    assert objects(s3, "staging/") == {}  # cleaned after success
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


def test_s3_to_es_loads_every_object(get_dag, connections, s3, local_env):
    docs = [{"_id": f"e{i}", "n": i, "msg": f"hello {i}"} for i in range(50)]
    for f in range(5):  # five objects, two per partition: three extract tasks
        body = b"".join(orjson.dumps(d) + b"\n" for d in docs[f::5])
        s3.put_object(Bucket=BUCKET, Key=f"in/date=2024-01-02/events-{f}.jsonl", Body=body)
    s3.put_object(Bucket=BUCKET, Key="in/date=2024-01-03/other.jsonl", Body=b'{"_id": "x", "n": -1}\n')
    dag = get_dag("s3_to_es")
    dr = run_interval(dag, day("2024-01-02"))
    assert dr.state == "success", states(dr)
    assert len([k for k in states(dr) if k[0] == "extract"]) == 3
    want = {d["_id"]: {"n": d["n"], "message": d["msg"]} for d in docs}
    assert fetch_all(connections["es"], "events") == want
    again = run_interval(dag, day("2024-01-02"))
    assert again.state == "success", states(again)
    assert fetch_all(connections["es"], "events") == want  # ids are stable: no duplicates
    assert xcom(again, "finalize")["written"] == 50
