"""``connection: <id>`` on an elasticsearch/opensearch block: the plugin maps an orchestrator's
connection onto its own fields (pure logic), and the expanded block runs against a real server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

import sluice_es.plugin
from sluice import ConfigError, hookimpl
from sluice.config import load_job
from sluice.connections import Connection, expand_connection
from sluice.registry import Registry
from sluice.testing import run_job
from sluice_es.connection import connection_fields, hosts

from .helpers import docs, fetch_all, write_input


def conn(**kwargs: Any) -> Connection:
    return Connection("my_es", **{"host": "es.example.com", **kwargs})


def test_hosts_take_port_and_scheme_from_the_connection() -> None:
    assert hosts(conn(port=9200)) == ["http://es.example.com:9200"]
    assert hosts(conn(port=9200, schema="https")) == ["https://es.example.com:9200"]
    assert hosts(conn(schema="logs")) == ["http://es.example.com"]  # a schema that is not a scheme is ignored
    assert hosts(conn(extra={"use_ssl": "true"})) == ["https://es.example.com"]
    assert hosts(conn(extra={"use_ssl": True}, schema="http")) == ["https://es.example.com"]
    assert hosts(conn(extra={"scheme": "https", "use_ssl": "false"}, schema="http")) == ["https://es.example.com"]


def test_several_hosts_with_or_without_scheme_and_port() -> None:
    c = conn(host=" es1, https://es2:9300 ,es3,,http://es4/prefix", port=9200, schema="https")
    assert hosts(c) == ["https://es1:9200", "https://es2:9300", "https://es3:9200", "http://es4:9200/prefix"]


def test_a_connection_without_host_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="connection 'my_es' has no host"):
        connection_fields(conn(host=None))
    with pytest.raises(ConfigError, match=r"'my_es'.*invalid port"):
        hosts(conn(host="es:port"))


def test_login_and_password_become_username_and_a_secret_template() -> None:
    fields = connection_fields(conn(login="loader", has_password=True, secret_prefix="airflow:"))
    assert fields == {"hosts": ["http://es.example.com"], "username": "loader",
                      "password": "{{ secret('airflow:my_es:password') }}"}


def test_an_api_key_extra_wins_over_the_password() -> None:
    fields = connection_fields(conn(login="loader", has_password=True, extra={"api_key": "stored elsewhere"}))
    assert fields == {"hosts": ["http://es.example.com"], "api_key": "{{ secret('my_es:extra.api_key') }}"}
    assert "stored elsewhere" not in str(fields)


def test_no_credentials_without_a_password() -> None:
    assert connection_fields(conn(login="reader")) == {"hosts": ["http://es.example.com"]}


def test_tls_flavour_and_region_extras_with_string_booleans_parsed() -> None:
    extra = {"verify_certs": "False", "compat_headers": "true", "ca_certs": "/etc/ca.pem", "flavor": "opensearch",
             "aws_sigv4_region": "eu-west-1", "unrelated": "x"}
    assert connection_fields(conn(extra=extra)) == {
        "hosts": ["http://es.example.com"], "verify_certs": False, "compat_headers": True,
        "ca_certs": "/etc/ca.pem", "flavor": "opensearch", "aws_sigv4_region": "eu-west-1"}
    assert connection_fields(conn(extra={"verify_certs": True, "compat_headers": None})) == {
        "hosts": ["http://es.example.com"], "verify_certs": True, "compat_headers": None}


def test_a_placeholder_maps_just_enough_to_validate() -> None:
    assert connection_fields(Connection.unresolved("my_es")) == {"hosts": "http://connection-my_es.invalid"}


def test_the_hook_answers_for_elasticsearch_and_opensearch_only() -> None:
    hook = Registry.from_plugins(sluice_es.plugin).hook()
    for name in ("elasticsearch", "opensearch"):
        assert hook.sluice_connection_fields(component_type=name, connection=conn())["hosts"] == [
            "http://es.example.com"]
    assert hook.sluice_connection_fields(component_type="s3", connection=conn()) is None


class Orchestrator:
    """A stand-in for an orchestrator adapter: connections by id, and their secrets."""

    def __init__(self, connections: dict[str, Connection], secrets: dict[str, str]) -> None:
        self.connections, self.secrets = connections, secrets
        self.looked_up: list[str] = []
        self.resolved: list[str] = []

    @hookimpl
    def sluice_lookup_connection(self, conn_id: str) -> Connection | None:
        self.looked_up.append(conn_id)
        return self.connections.get(conn_id)

    @hookimpl
    def sluice_resolve_secret(self, name: str) -> str | None:
        if name in self.secrets:
            self.resolved.append(name)
            return self.secrets[name]
        return None


def test_a_connection_block_expands_through_core_and_the_job_runs(os_url: str) -> None:
    url = urlsplit(os_url)
    x = Connection("x", conn_type="opensearch", host=url.hostname, port=url.port, login="loader",
                   has_password=True, secret_prefix="orch:", extra={"flavor": "opensearch", "verify_certs": "false"})
    orchestrator = Orchestrator({"x": x}, {"orch:x:password": "s3cret"})
    registry = Registry.from_plugins(orchestrator, sluice_es.plugin)
    block = {"type": "opensearch", "connection": "x", "index": "target", "refresh": True}

    assert expand_connection(block, "sink", "destination", registry) == {
        "type": "opensearch", "index": "target", "refresh": True, "hosts": [os_url], "username": "loader",
        "password": "{{ secret('orch:x:password') }}", "flavor": "opensearch", "verify_certs": False}

    job = {"job_name": "load", "source": {"type": "jsonl", "path": write_input(docs(25))}, "destination": block}
    summary = run_job(job, registry=registry)
    assert summary.status == "succeeded", summary.error
    assert summary.written == 25 and len(fetch_all(os_url, "target")) == 25
    assert orchestrator.resolved == ["orch:x:password"]

    orchestrator.looked_up.clear()
    placeholder = load_job(job, registry=registry, secret_mode="placeholder")
    assert orchestrator.looked_up == [], "validating never asks the orchestrator"
    assert placeholder.destination.config.hosts == ["http://connection-x.invalid"]


def test_a_block_field_wins_over_the_connection() -> None:
    registry = Registry.from_plugins(Orchestrator({"x": conn(port=9200, login="u", has_password=True)}, {}),
                                     sluice_es.plugin)
    out = expand_connection({"type": "elasticsearch", "connection": "x", "index": "i", "hosts": "http://mine:1"},
                            "source", "source", registry)
    assert out["hosts"] == "http://mine:1" and out["username"] == "u"
