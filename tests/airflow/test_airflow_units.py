"""Pure logic of sluice-airflow without running a DAG: connections, secrets, imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from sluice import ConfigError, JobFailed, stages
from sluice.config import load_job
from sluice.templating import Interval
from sluice_airflow.connections import lookup, resolve_secret

ES_CONN = ('{"conn_type": "elasticsearch", "host": "es1,https://es2:9243", "port": 9200, "schema": "https", '
           '"login": "elastic", "password": "pw-7", "extra": {"verify_certs": "false", "api_key": "k-1"}}')


def test_an_airflow_connection_is_handed_over_without_its_password(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_ES", ES_CONN)
    conn = lookup("unit_es")
    assert conn is not None
    assert (conn.conn_id, conn.conn_type, conn.host, conn.port, conn.login, conn.schema) == (
        "unit_es", "elasticsearch", "es1,https://es2:9243", 9200, "elastic", "https")
    assert conn.has_password and "pw-7" not in repr(conn)
    assert conn.secret("password") == "{{ secret('airflow:unit_es:password') }}"
    with pytest.raises(ConfigError, match="'unit_nope' is not defined"):
        lookup("unit_nope")


def test_airflow_secrets_resolve_from_connections(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_ES", ES_CONN)
    assert resolve_secret("airflow:unit_es") == "pw-7"
    assert resolve_secret("airflow:unit_es:login") == "elastic"
    assert resolve_secret("airflow:unit_es:port") == "9200"
    assert resolve_secret("airflow:unit_es:extra.api_key") == "k-1"
    assert resolve_secret("ES_PASSWORD") is None  # not ours: core's environment lookup answers
    with pytest.raises(ConfigError, match="'unit_missing' is not defined"):
        resolve_secret("airflow:unit_missing")
    with pytest.raises(ConfigError, match="unknown connection field 'hosts'"):
        resolve_secret("airflow:unit_es:hosts")  # Elasticsearch knowledge lives in sluice-es
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_BARE", '{"conn_type": "generic", "host": "h"}')
    with pytest.raises(ConfigError, match="has no schema"):
        resolve_secret("airflow:unit_bare:schema")


def test_connection_blocks_expand_through_the_plugins_that_own_the_types(monkeypatch, tmp_path):
    """The adapter only looks connections up; sluice-es and sluice-s3 map them onto their fields."""
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_ES", ES_CONN)
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_AWS", '{"conn_type": "aws", "login": "id-1", "password": "key-2", '
                                                '"extra": {"region_name": "eu-west-1"}}')
    raw = {"job_name": "unit", "source": {"type": "opensearch", "connection": "unit_es", "index": "logs"},
           "destination": {"type": "s3", "connection": "unit_aws", "uri": "s3://b/p"}}
    job = load_job(raw, interval=Interval.for_day("2024-01-02"))
    src, dst = job.source.config, job.destination.config
    assert src.hosts == ["https://es1:9200", "https://es2:9243"] and src.verify_certs is False
    assert src.api_key.get_secret_value() == "k-1" and src.password is None  # an api key wins
    assert dst.access_key_id.get_secret_value() == "id-1" and dst.region == "eu-west-1"
    assert raw["source"] == {"type": "opensearch", "connection": "unit_es", "index": "logs"}  # not changed


def test_a_misspelled_type_next_to_connection_gets_the_usual_suggestion(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_ES", ES_CONN)
    with pytest.raises(ConfigError, match=r"unknown source type 'opensearhc'\. Did you mean 'opensearch'\?"):
        load_job({"job_name": "unit", "source": {"type": "opensearhc", "connection": "unit_es", "index": "x"}},
                 interval=Interval.for_day("2024-01-02"))
    with pytest.raises(ConfigError, match=r"type 'filter' does not take connection:"):
        load_job({"job_name": "unit", "source": {"type": "jsonl", "path": "x"},
                  "transform": {"steps": [{"type": "filter", "connection": "unit_es", "where": "true"}]}},
                 interval=Interval.for_day("2024-01-02"))


def test_parsing_validates_connection_blocks_without_looking_connections_up():
    job = load_job({"job_name": "unit", "source": {"type": "opensearch", "connection": "never_defined", "index": "x"},
                    "destination": {"type": "s3", "connection": "nor_this", "uri": "s3://b/p"}},
                   interval=Interval.for_day("2024-01-02"), secret_mode="placeholder")
    assert job.source.config.hosts == ["http://connection-never_defined.invalid"]


def test_importing_the_package_and_its_plugin_does_not_import_airflow_or_clients():
    code = ("import sys, sluice_airflow, sluice_airflow.plugin, sluice_airflow.connections\n"
            "heavy = {'airflow', 'boto3', 'botocore', 'elasticsearch', 'opensearchpy', 'httpx'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_adapter_imports_no_plugin():
    from pathlib import Path

    import sluice_airflow

    for path in Path(sluice_airflow.__file__).parent.glob("*.py"):
        text = path.read_text()
        for plugin in ("sluice_s3", "sluice_es", "sluice_transforms"):
            assert plugin not in text, f"{path.name} imports {plugin}: the adapter must go through hooks"


def test_a_down_cluster_fails_the_plan_naming_the_host_never_the_password(tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_DOWN", f'{{"conn_type": "elasticsearch", "host": "127.0.0.1", '
                                                 f'"port": {port}, "login": "u", "password": "pw-secret-4711"}}')
    (tmp_path / "in.jsonl").write_text('{"_id": "a", "n": 1}\n')
    raw: dict[str, Any] = {
        "job_name": "unit_down", "staging": str(tmp_path / "stg"),
        "runtime": {"retry": {"attempts": 2, "initial_backoff_s": 0.01, "max_backoff_s": 0.02, "max_time_s": 2}},
        "source": {"type": "jsonl", "path": str(tmp_path / "in.jsonl")},
        "destination": {"type": "opensearch", "connection": "unit_down", "index": "x", "flavor": "opensearch",
                        "request_timeout_s": 2}}
    with pytest.raises(JobFailed) as err:  # plan readies the destination: a down cluster fails at once
        stages.plan(raw, Interval.for_day("2024-01-02"))
    assert str(err.value).startswith("job 'unit_down', run unit_down-20240102T000000-20240103T000000: plan: "
                                     "preparing the destination (x) failed: cannot connect to OpenSearch at ")
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "pw-secret-4711" not in str(err.value)
    assert "password" not in raw["destination"]  # the raw job never holds it
