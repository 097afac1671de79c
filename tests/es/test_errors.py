"""A cluster that is down or refuses the credentials fails with one clear line: host named, secret never."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from sluice import PermanentError
from sluice.testing import run_job

from .helpers import write_input

PASSWORD = "s3cr3t-Passw0rd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def source_job(url: str, **extra: Any) -> dict[str, Any]:
    return {"job_name": "errors", "runtime": {"retry": {"attempts": 2, "initial_backoff_s": 0.01}},
            "source": {"type": "elasticsearch", "hosts": [url], "index": "logs", **extra},
            "destination": {"type": "jsonl", "path": "out"}}


def sink_job(url: str, **extra: Any) -> dict[str, Any]:
    return {"job_name": "errors", "runtime": {"retry": {"attempts": 2, "initial_backoff_s": 0.01}},
            "source": {"type": "jsonl", "path": write_input([{"_id": "a"}])},
            "destination": {"type": "elasticsearch", "hosts": [url], "index": "target", **extra}}


@pytest.mark.parametrize("make_job", [source_job, sink_job], ids=["source", "sink"])
def test_a_cluster_that_is_down_is_named_without_the_password(make_job: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    summary = run_job(make_job(url, flavor="elasticsearch", username="elastic", password=PASSWORD))
    assert summary.status == "failed"
    assert summary.error == f"cannot connect to Elasticsearch at {url}: connection refused"
    assert PASSWORD not in summary.error


def test_credentials_in_the_url_are_not_shown(fault_proxy: Any) -> None:
    port = free_port()
    summary = run_job(source_job(f"http://elastic:{PASSWORD}@127.0.0.1:{port}"))
    assert summary.status == "failed"
    assert f"http://127.0.0.1:{port}" in summary.error and PASSWORD not in summary.error


@pytest.mark.parametrize("password", ["hunter2@Tail-Of-Secret", "a:b@c/d%e", "Pässwört@密码"])
def test_a_password_with_at_signs_in_a_host_url_never_shows_on_any_output(tmp_path: Any, monkeypatch: Any,
                                                                         password: str) -> None:
    """The CLI's stdout, stderr and summary file, with the secret resolved into the URL."""
    import subprocess
    import sys
    from pathlib import Path

    import orjson

    port = free_port()
    job = source_job("http://elastic:{{ secret('ES_PW') }}@127.0.0.1:" + str(port))
    (tmp_path / "job.json").write_bytes(orjson.dumps(job))
    sluice = str(Path(sys.executable).with_name("sluice"))
    result = subprocess.run([sluice, "run", str(tmp_path / "job.json"), "--summary-json", str(tmp_path / "s.json")],
                            capture_output=True, text=True, env={**__import__("os").environ, "ES_PW": password},
                            cwd=tmp_path)
    assert result.returncode == 1
    shown = result.stdout + result.stderr + (tmp_path / "s.json").read_text()
    assert f"127.0.0.1:{port}" in shown or not password.isascii()  # the client cannot send a non-ASCII one
    pieces = {password, *password.replace("/", "@").replace(":", "@").replace("%", "@").split("@")}
    for piece in pieces:
        if len(piece) >= 3:
            assert piece not in shown, piece


@pytest.mark.parametrize("flavor", [{}, {"flavor": "elasticsearch"}, {"flavor": "opensearch"}],
                         ids=["detected", "elasticsearch", "opensearch"])
@pytest.mark.parametrize("make_job", [source_job, sink_job], ids=["source", "sink"])
def test_a_wrong_password_is_an_authentication_error(os_url: str, fault_proxy: Any, make_job: Any,
                                                     flavor: dict[str, str]) -> None:
    proxy = fault_proxy(os_url)
    proxy.add(status=401, times=100, headers={"WWW-Authenticate": 'Basic realm="security"'},
              body=b'{"error":{"type":"security_exception","reason":"unable to authenticate user [elastic]"},'
                   b'"status":401}')
    summary = run_job(make_job(proxy.url, username="elastic", password=PASSWORD, **flavor))
    assert summary.status == "failed"
    assert summary.error == f"authentication failed for {proxy.url} (check the credentials)"
    assert proxy.count() == 1, "a refused credential is not retried"


@pytest.mark.parametrize("auth", [{"api_key": "key-id:key-secret-value"}, {"bearer_token": "tok-secret-value"},
                                  {"username": "elastic", "password": PASSWORD},
                                  {"aws_sigv4_region": "us-east-1"}])
def test_auth_options_reach_the_server(os_url: str, fault_proxy: Any, auth: dict[str, str]) -> None:
    """The server here accepts any credentials; the job works with each kind of auth (SigV4 signs with the
    test's AWS credentials from the environment)."""
    summary = run_job(sink_job(os_url, **auth))
    assert summary.status == "succeeded", summary.error


def test_conflicting_auth_options_are_a_config_error(os_url: str) -> None:
    from sluice import ConfigError

    with pytest.raises(ConfigError, match="choose one way to authenticate"):
        run_job(sink_job(os_url, api_key="k", bearer_token="t"))


def test_a_host_without_scheme_means_http(os_url: str) -> None:
    summary = run_job(sink_job(os_url.removeprefix("http://"), flavor="elasticsearch", compat_headers=False))
    assert summary.status == "succeeded", summary.error


def test_resuming_with_another_pagination_is_refused(os_url: str) -> None:
    from sluice.testing import build, make_context
    from sluice_es.source import EsSource

    source: EsSource = build("source", {"type": "opensearch", "hosts": [os_url], "index": "logs*",
                                        "pagination": "pit"}, make_context())
    try:
        partition = source.partitions()[0]
        with pytest.raises(PermanentError, match="another pagination"):
            next(source.read(partition, {"skip": 10}))
    finally:
        source.close()
