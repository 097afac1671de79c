"""The Elasticsearch flavour (official client) against the OpenSearch-compatible server.

The server speaks OpenSearch's PIT endpoints only, so for the PIT path the test's proxy translates
Elasticsearch's ``POST /{index}/_pit`` and ``DELETE /_pit`` into OpenSearch's
``/{index}/_search/point_in_time`` calls; searches with a PIT have the same body in both.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from typing import Any

from sluice.testing import read_jsonl, run_job

from .helpers import FAST_RETRY


def _call(method: str, url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def translate_pit(proxy: Any, upstream: str, seen: list[str]) -> None:
    """Make ``proxy`` answer Elasticsearch's PIT API with OpenSearch's."""

    def open_pit(status: int, headers: dict, request: bytes, body: bytes) -> tuple[int, dict, bytes]:
        index, keep_alive = seen[-1]
        created = _call("POST", f"{upstream}/{index}/_search/point_in_time?keep_alive={keep_alive}")
        return 200, {"Content-Type": "application/json"}, json.dumps({"id": created["pit_id"]}).encode()

    def close_pit(status: int, headers: dict, request: bytes, body: bytes) -> tuple[int, dict, bytes]:
        pit_id = json.loads(request)["id"]
        _call("DELETE", f"{upstream}/_search/point_in_time", {"pit_id": [pit_id]})
        seen.append(f"closed {pit_id}")
        return 200, {"Content-Type": "application/json"}, b'{"succeeded":true,"num_freed":1}'

    original_take = proxy._take

    def take(method: str, path: str) -> Any:  # remember which index and keep_alive were asked for
        m = re.match(r"^/([^/?]+)/_pit\?keep_alive=([^&]+)", path)
        if method == "POST" and m:
            seen.append((m.group(1), m.group(2)))
        return original_take(method, path)

    proxy._take = take
    proxy.add(method="POST", path=r"^/[^/]+/_pit", rewrite=open_pit, times=100)
    proxy.add(method="DELETE", path=r"^/_pit", rewrite=close_pit, times=100)


def test_elasticsearch_flavour_pit_slices_read_everything_once(os_url: str, seeded: Any, fault_proxy: Any) -> None:
    loaded = seeded("logs", 900)
    proxy = fault_proxy(os_url)
    seen: list[Any] = []
    translate_pit(proxy, os_url, seen)
    summary = run_job({
        "job_name": "es-pit", "runtime": {"retry": FAST_RETRY},
        "source": {"type": "elasticsearch", "hosts": [proxy.url], "index": "logs", "flavor": "elasticsearch",
                   "compat_headers": False, "pagination": "pit", "slices": 3, "page_size": 100},
        "destination": {"type": "jsonl", "path": "out"},
    })
    assert summary.status == "succeeded", summary.error
    ids = Counter(r["_id"] for r in read_jsonl("out"))
    assert set(ids) == {d["_id"] for d in loaded} and max(ids.values()) == 1
    assert proxy.count("POST", r"^/logs/_pit") == 1  # one PIT shared by the slices
    assert any(isinstance(s, str) and s.startswith("closed") for s in seen), "the PIT must be closed"


def test_versioned_media_types_are_refused_by_the_server_and_reported(os_url: str, seeded: Any) -> None:
    """compat_headers: true makes the official client send ``compatible-with`` types: the
    OpenSearch-compatible server refuses them, which is why compat_headers: false exists."""
    seeded("logs", 5)
    summary = run_job({
        "job_name": "compat", "runtime": {"retry": {"attempts": 1}},
        "source": {"type": "elasticsearch", "hosts": [os_url], "index": "logs", "flavor": "elasticsearch",
                   "compat_headers": True, "pagination": "scroll"},
        "destination": {"type": "jsonl", "path": "out"},
    })
    assert summary.status == "failed"
    assert os_url in summary.error and "406" in summary.error


def test_plain_json_reaches_the_server_from_the_elasticsearch_client(os_url: str, seeded: Any) -> None:
    seeded("logs", 5)
    summary = run_job({
        "job_name": "plain", "source": {"type": "elasticsearch", "hosts": [os_url], "index": "logs",
                                        "flavor": "elasticsearch", "compat_headers": False},
        "destination": {"type": "elasticsearch", "hosts": [os_url], "index": "copy", "flavor": "elasticsearch",
                        "compat_headers": False, "refresh": True},
    })
    assert summary.status == "succeeded", summary.error
    assert summary.written == 5


def as_elasticsearch_8(status: int, headers: dict, request: bytes, body: bytes) -> tuple[int, dict, bytes]:
    """``GET /`` answered the way Elasticsearch 8 answers it."""
    info = json.loads(body)
    info["version"] = {"number": "8.15.0", "build_flavor": "default", "lucene_version": "9.11.1"}
    info["tagline"] = "You Know, for Search"
    return status, {**headers, "X-Elastic-Product": "Elasticsearch"}, json.dumps(info).encode()


def test_an_elasticsearch_cluster_is_detected_and_gets_plain_json(os_url: str, seeded: Any,
                                                                 fault_proxy: Any) -> None:
    """No flavor set: GET / says Elasticsearch 8, so the official client is used, and as its major
    version (9) differs from the server's, with plain JSON media types (auto compat_headers)."""
    from sluice.testing import build, make_context

    seeded("logs", 20)
    proxy = fault_proxy(os_url)
    proxy.add(method="GET", path=r"^/$", rewrite=as_elasticsearch_8, times=10)
    source = build("source", {"type": "elasticsearch", "hosts": [proxy.url], "index": "logs",
                              "pagination": "scroll"}, make_context())
    try:
        assert source.cluster.dialect.flavor == "elasticsearch" and source.cluster.version == (8, 15)
        assert type(source.cluster.client).__module__.startswith("elasticsearch")
        records = [r for p in source.partitions() for b in source.read(p) for r in b.records]
        assert len(records) == 20  # versioned media types would have been refused (406)
    finally:
        source.close()


def test_elasticsearch_flavour_without_compat_setting_talks_plain_json_to_other_majors(
        os_url: str, seeded: Any) -> None:
    seeded("logs", 5)
    summary = run_job({
        "job_name": "auto", "source": {"type": "elasticsearch", "hosts": [os_url], "index": "logs",
                                       "flavor": "elasticsearch", "pagination": "scroll"},
        "destination": {"type": "jsonl", "path": "out"},
    })
    assert summary.status == "succeeded", summary.error
