"""``connection: <id>`` on S3 components: the plugin maps an orchestrator's AWS connection onto
its own fields, with keys as secret() templates, never as values."""

from __future__ import annotations

from typing import Any

import pytest

from sluice import hookimpl
from sluice.connections import Connection
from sluice.registry import get_registry
from sluice.testing import load_test_job, run_job
from sluice_s3 import plugin

from .helpers import BUCKET, FAST_RUNTIME, keys


def aws(**fields: Any) -> Connection:
    return Connection("aws_test", "aws", secret_prefix="test:", **fields)


def fields(connection: Connection) -> Any:
    return get_registry().hook().sluice_connection_fields(component_type="s3", connection=connection)


def test_keys_become_secret_templates_and_the_rest_plain_fields() -> None:
    connection = aws(login="AKIAEXAMPLE", has_password=True,
                     extra={"aws_session_token": "tok", "region_name": "eu-west-1",
                            "endpoint_url": "http://minio:9000", "profile_name": "analytics"})
    assert fields(connection) == {
        "access_key_id": "{{ secret('test:aws_test:login') }}",
        "secret_access_key": "{{ secret('test:aws_test:password') }}",
        "session_token": "{{ secret('test:aws_test:extra.aws_session_token') }}",
        "region": "eu-west-1",
        "endpoint_url": "http://minio:9000",
        "profile": "analytics",
    }


@pytest.mark.parametrize(("connection", "expected"), [
    (aws(extra={"service_config": {"s3": {"endpoint_url": "http://r2:1"}}, "region": "auto"}),
     {"endpoint_url": "http://r2:1", "region": "auto"}),
    (aws(host="https://minio.internal:9000"), {"endpoint_url": "https://minio.internal:9000"}),
    (aws(host="minio.internal"), {}),  # a bare host name is not an endpoint
    (aws(extra={"endpoint_url": "http://a:1", "service_config": {"s3": {"endpoint_url": "http://b:2"}}}),
     {"endpoint_url": "http://a:1"}),
    (aws(login="AKIA"), {"access_key_id": "{{ secret('test:aws_test:login') }}"}),
    (aws(), {}),  # no keys: the worker's role through the AWS default chain
], ids=["service_config", "host-url", "host-name", "extra-first", "login-only", "empty"])
def test_endpoint_region_and_keys_come_from_where_aws_connections_keep_them(connection: Connection,
                                                                           expected: dict[str, Any]) -> None:
    assert fields(connection) == expected


def test_a_placeholder_connection_maps_to_nothing_as_every_field_is_optional() -> None:
    assert fields(Connection.unresolved("aws_test")) == {}


def test_other_component_types_are_not_ours() -> None:
    assert plugin.sluice_connection_fields(component_type="elasticsearch", connection=aws(login="x")) is None
    assert plugin.sluice_connection_fields(component_type="s3", connection=aws(login="x")) is not None


class FakeOrchestrator:
    """Connections and their secrets, as sluice-airflow provides them inside Airflow."""

    def __init__(self, moto_url: str) -> None:
        self.connection = aws(login="testing", has_password=True,
                              extra={"endpoint_url": moto_url, "region_name": "us-east-1"})
        self.resolved: list[str] = []

    @hookimpl
    def sluice_lookup_connection(self, conn_id: str) -> Connection | None:
        return self.connection if conn_id == "aws_test" else None

    @hookimpl
    def sluice_resolve_secret(self, name: str) -> str | None:
        if name.startswith("test:aws_test:"):
            self.resolved.append(name)
            return "testing"
        return None


def test_a_job_writes_to_s3_through_a_connection(s3: Any, bucket: str, moto_url: str, sluice_registry: Any,
                                                tmp_path: Any) -> None:
    orchestrator = FakeOrchestrator(moto_url)
    sluice_registry(plugin, orchestrator)
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n{"n": 2}\n')
    job = {"job_name": "via_connection", "runtime": FAST_RUNTIME, "source": {"type": "jsonl", "path": "in.jsonl"},
           "destination": {"type": "s3", "connection": "aws_test", "uri": f"s3://{BUCKET}/out", "region": "us-east-1"}}

    spec = load_test_job(job).destination
    assert spec.config.endpoint_url == moto_url
    assert spec.config.access_key_id.get_secret_value() == "testing"
    summary = run_job(job)

    assert summary.status == "succeeded", summary.error
    assert set(orchestrator.resolved) == {"test:aws_test:login", "test:aws_test:password"}
    assert any(k.endswith("_SUCCESS") for k in keys(s3, "out/"))
