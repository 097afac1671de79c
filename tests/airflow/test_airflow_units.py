"""Pure logic of sluice-airflow without running Airflow: connections, secrets, counting, imports."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from sluice import ConfigError, JobFailed
from sluice_airflow.connections import expand_connection, expand_job, resolve_secret
from sluice_airflow.reconcile import add_counts, reconcile


def conn(**kw: Any) -> Any:
    base = {"conn_id": "c", "conn_type": "generic", "host": None, "port": None, "schema": None, "login": None,
            "password": None, "extra_dejson": {}}
    return SimpleNamespace(**{**base, **kw})


def test_an_es_connection_becomes_hosts_user_and_a_password_secret():
    c = conn(conn_id="my_es", host="es1,https://es2:9243", port=9200, schema="https", login="elastic",
             password="pw", extra_dejson={"verify_certs": "false"})
    block = expand_connection({"type": "elasticsearch", "connection": "my_es", "index": "logs"}, "source", c)
    assert block == {"type": "elasticsearch", "index": "logs", "hosts": "https://es1:9200,https://es2:9243",
                     "username": "elastic", "password": "{{ secret('airflow:my_es:password') }}",
                     "verify_certs": False}


def test_an_api_key_wins_over_a_password_and_block_fields_win_over_the_connection():
    c = conn(conn_id="k", host="es", port=9200, login="u", password="p", extra_dejson={"api_key": "abc"})
    block = expand_connection({"type": "opensearch", "connection": "k", "hosts": ["http://mine:1"]}, "sink", c)
    assert block == {"type": "opensearch", "hosts": ["http://mine:1"],
                     "api_key": "{{ secret('airflow:k:extra.api_key') }}"}


def test_an_aws_connection_becomes_keys_region_and_endpoint():
    c = conn(conn_id="aws", login="AKIA", password="s3cr3t",
             extra_dejson={"region_name": "eu-west-1", "endpoint_url": "http://minio:9000"})
    block = expand_connection({"type": "s3", "connection": "aws", "uri": "s3://b/p"}, "destination", c)
    assert block == {"type": "s3", "uri": "s3://b/p", "access_key_id": "{{ secret('airflow:aws:login') }}",
                     "secret_access_key": "{{ secret('airflow:aws:password') }}", "region": "eu-west-1",
                     "endpoint_url": "http://minio:9000"}


def test_without_a_connection_lookup_only_placeholders_are_added():
    raw = {"job_name": "j", "source": {"type": "opensearch", "connection": "es", "index": "x"},
           "destination": {"type": "s3", "connection": "aws", "uri": "s3://b/p"}}
    out = expand_job(raw, lookup=False)
    assert out["source"] == {"type": "opensearch", "index": "x", "hosts": "{{ secret('airflow:es:hosts') }}"}
    assert out["destination"] == {"type": "s3", "uri": "s3://b/p"}
    assert raw["source"]["connection"] == "es"  # the raw job is not changed


def test_connection_on_another_component_type_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"transform\.steps\[0\].*not on type 'filter'"):
        expand_job({"job_name": "j", "transform": {"steps": [{"type": "filter", "connection": "x"}]}}, lookup=False)


def test_airflow_secrets_resolve_from_connections(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_ES", '{"conn_type": "elasticsearch", "host": "h", "port": 9200, '
                                               '"login": "u", "password": "pw-7", "extra": {"api_key": "k-1"}}')
    assert resolve_secret("airflow:unit_es") == "pw-7"
    assert resolve_secret("airflow:unit_es:login") == "u"
    assert resolve_secret("airflow:unit_es:hosts") == "http://h:9200"
    assert resolve_secret("airflow:unit_es:extra.api_key") == "k-1"
    assert resolve_secret("ES_PASSWORD") is None  # not ours: core's environment lookup answers
    with pytest.raises(ConfigError, match="'unit_missing' is not defined"):
        resolve_secret("airflow:unit_missing")
    with pytest.raises(ConfigError, match="has no schema"):
        resolve_secret("airflow:unit_es:schema")


def test_the_secret_hook_answers_through_the_registry(monkeypatch):
    from sluice.registry import get_registry

    monkeypatch.setenv("AIRFLOW_CONN_UNIT_AWS", '{"conn_type": "aws", "login": "id-1", "password": "key-2"}')
    hook = get_registry().hook()
    assert hook.sluice_resolve_secret(name="airflow:unit_aws") == "key-2"
    block = hook.sluice_expand_block(kind="sink", block={"type": "s3", "connection": "unit_aws", "uri": "s3://b"})
    assert block["secret_access_key"] == "{{ secret('airflow:unit_aws:password') }}"


def test_importing_the_package_and_its_plugin_does_not_import_airflow_or_clients():
    code = ("import sys, sluice_airflow, sluice_airflow.plugin, sluice_airflow.stages\n"
            "heavy = {'airflow', 'boto3', 'botocore', 'elasticsearch', 'opensearchpy', 'httpx'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def counts(read: int, written: int, filtered: int = 0, dead: int = 0, created: int = 0) -> dict[str, Any]:
    return {"read": read, "written": written, "created": created, "filtered_total": filtered,
            "dead_lettered_total": dead, "retries": 0, "partitions": 1}


def test_stage_counts_reconcile_across_stages():
    extract = add_counts([counts(60, 59, dead=1), counts(40, 40)])
    r = reconcile(extract, counts(99, 90, filtered=5, dead=4), counts(90, 88, dead=2))
    assert r.problems == []
    assert (r.read, r.written, r.filtered, r.dead_lettered) == (100, 88, 5, 7)
    assert r.dead_by_stage == {"extract": 1, "transform": 4, "load": 2}


def test_records_lost_between_stages_are_named():
    r = reconcile(counts(100, 100), counts(98, 98), counts(98, 98))
    assert r.problems == ["transform read 98 records but extract staged 100"]
    r = reconcile(counts(10, 10), None, counts(10, 9))
    assert r.problems == ["load: read 10 + created 0 != written 9 + filtered 0 + dead letters 0 (+1)"]


def test_finalize_fails_above_the_threshold_with_the_numbers(tmp_path):
    from sluice.templating import Interval
    from sluice_airflow.stages import RunPlan

    raw = {"job_name": "unit", "staging": str(tmp_path / "stg"), "runtime": {"error_rate_threshold": 0.05},
           "source": {"type": "jsonl", "path": str(tmp_path / "in.jsonl")},
           "destination": {"type": "jsonl", "path": str(tmp_path / "out")},
           "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")}}
    (tmp_path / "in.jsonl").write_text("".join(f'{{"n": {i}}}\n' for i in range(18)) + "not json\nnor this\n")
    plan = RunPlan(raw, Interval.for_day("2024-01-02"), lookup=False)
    extracted = [plan.extract(key) for key in plan.partitions()]
    loaded = plan.load()
    with pytest.raises(JobFailed) as err:
        plan.finalize(extracted, [], loaded)
    assert "error rate 10.00% (2 dead letters / 20 records read; extract 2) exceeds error_rate_threshold 5.00%" in str(
        err.value)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    from sluice.testing import read_jsonl

    assert [d["context"].get("line") for d in read_jsonl(tmp_path / "dead")] == [19, 20]
    assert (tmp_path / "stg").exists()  # kept for inspection after a failure


def test_re_running_a_stage_task_rewrites_the_same_staging(tmp_path):
    from af_helpers import tree

    from sluice.templating import Interval
    from sluice_airflow.stages import RunPlan

    (tmp_path / "in").mkdir()
    for f in range(2):
        (tmp_path / "in" / f"p{f}.jsonl").write_text("".join(f'{{"n": {i}, "f": {f}}}\n' for i in range(25)))
    raw = {"job_name": "unit", "staging": str(tmp_path / "stg"), "runtime": {"batch_size": 10},
           "source": {"type": "jsonl", "path": str(tmp_path / "in")},
           "transform": {"steps": [{"type": "filter", "where": "record.n % 2 == 0"}]},
           "destination": {"type": "jsonl", "path": str(tmp_path / "out")}}
    plan = RunPlan(raw, Interval.for_day("2024-01-02"), lookup=False)
    first = [plan.transform(plan.extract(key)["partition"]) for key in plan.partitions()]
    staged = {k: v for k, v in tree(tmp_path / "stg").items() if "_checkpoints" not in k}
    again = [plan.transform(plan.extract(key)["partition"]) for key in plan.partitions()]
    assert {k: v for k, v in tree(tmp_path / "stg").items() if "_checkpoints" not in k} == staged
    assert [m["counts"]["written"] for m in again] == [m["counts"]["written"] for m in first] == [13, 13]
    assert sorted(k.split("/", 2)[-1] for k in staged if "/transform/" in k) == [
        "transform/p0.jsonl/part-p0.jsonl-00000.jsonl", "transform/p1.jsonl/part-p1.jsonl-00000.jsonl"]


def test_a_down_cluster_fails_the_stage_naming_the_host_never_the_password(tmp_path, monkeypatch):
    import socket

    from sluice.templating import Interval
    from sluice_airflow.stages import RunPlan

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_DOWN", f'{{"conn_type": "elasticsearch", "host": "127.0.0.1", '
                                                 f'"port": {port}, "login": "u", "password": "pw-secret-4711"}}')
    (tmp_path / "in.jsonl").write_text('{"_id": "a", "n": 1}\n')
    raw = {"job_name": "unit_down", "staging": str(tmp_path / "stg"),
           "runtime": {"retry": {"attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.02, "max_time_s": 2}},
           "source": {"type": "jsonl", "path": str(tmp_path / "in.jsonl")},
           "destination": {"type": "opensearch", "connection": "unit_down", "index": "x", "flavor": "opensearch",
                           "request_timeout_s": 2}}
    plan = RunPlan(raw, Interval.for_day("2024-01-02"))
    assert plan.job.destination.raw["password"] == "pw-secret-4711"  # resolved from the connection ...
    assert "password" not in raw["destination"]  # ... while the raw job never holds it
    plan.extract(plan.partitions()[0])
    with pytest.raises(JobFailed) as err:
        plan.load()
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "pw-secret-4711" not in str(err.value)
