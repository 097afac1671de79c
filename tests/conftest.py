"""Shared fixtures: real servers started once per session, fault proxies, job runner.

- ``osmem_server`` / ``osmem_clone`` come from osmem-server's own pytest plugin (a real
  OpenSearch-compatible HTTP server process; a clone is an isolated copy per test).
- ``moto_url``: moto's S3 in server mode over real HTTP (reset before each test that uses ``s3``).
- ``fault_proxy``: a factory of HTTP proxies in front of a real server that inject faults.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.faultproxy import FaultProxy

# Credentials for moto only; real runs take them from the AWS default chain.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto server (S3 and friends) on a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_url: str) -> Any:
    """A boto3 S3 client on a freshly reset moto server."""
    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).read()
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    """Make proxies in front of an upstream URL; all are closed after the test."""
    proxies: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        proxy = FaultProxy(upstream)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture(autouse=True)
def _isolated_workdir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory, so default checkpoint/dead-letter paths never collide."""
    monkeypatch.chdir(tmp_path)
