"""The sink's two phases across processes: loads report the indices they wrote, and a fresh
instance that wrote nothing (a staged run's finalize) refreshes exactly those at commit."""

from __future__ import annotations

import multiprocessing
from typing import Any
from urllib.parse import unquote, urlsplit

from sluice import Batch, SinkRun
from sluice.testing import build, run_job
from sluice.testing.conformance import commit_run, prepare_run, write_partitions
from sluice_es.sink import url_groups

from .helpers import docs, write_input

NO_REFRESH = {"settings": {"refresh_interval": "-1"}}  # searchable only after a refresh


def refreshed(proxy: Any) -> list[list[str]]:
    """The index lists of every ``_refresh`` request the proxy saw, in order."""
    out = []
    for seen in proxy.seen:
        path = urlsplit(seen.path).path
        if path.endswith("/_refresh"):
            out.append(sorted(unquote(path[1:-len("/_refresh")]).split(",")))
    return out


def partitions() -> list[tuple[str, list[dict[str, Any]]]]:
    """Two partitions writing two indices: ``logs-web`` from p-a, ``logs-api`` from p-b."""
    return [("p-a", [{**d, "app": "web"} for d in docs(30)]),
            ("p-b", [{**d, "app": "api"} for d in docs(20, start=30)])]


def test_a_fresh_instance_refreshes_at_commit_what_two_other_processes_wrote(os_url: str, fault_proxy: Any) -> None:
    """osmem makes documents searchable at once even with ``refresh_interval: -1`` (checked), so
    what proves the refresh is the request the server receives: one, naming exactly both indices."""
    from opensearchpy import OpenSearch

    proxy = fault_proxy(os_url)
    block = {"type": "opensearch", "hosts": [proxy.url], "index": "logs-{{ record.app }}", "refresh": True,
             "create_index": NO_REFRESH}
    prepare_run(block)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(write_partitions, [(block, [part]) for part in partitions()])
    assert [n for n, _ in results] == [30, 20]
    reports = [report for _, report in results]
    assert reports == [{"indices": ["logs-web"]}, {"indices": ["logs-api"]}]
    assert refreshed(proxy) == [], "the loads refresh nothing"

    commit_run(block, ["p-a", "p-b"], reports)

    assert refreshed(proxy) == [["logs-api", "logs-web"]]
    client = OpenSearch(hosts=[os_url])
    settings = client.indices.get_settings(index="logs-web")["logs-web"]["settings"]["index"]
    assert settings["refresh_interval"] == "-1"
    assert client.count(index="logs-web,logs-api")["count"] == 50  # no manual refresh here
    client.close()


def test_commit_refreshes_what_this_instance_wrote_with_the_reports(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    block = {"type": "elasticsearch", "hosts": [proxy.url], "index": "logs-{{ record.app }}", "refresh": True}
    _, report = write_partitions(block, partitions()[1:])
    sink = build("sink", block)
    try:
        sink.start_partition("p-a", 0)
        assert sink.write(Batch(partitions()[0][1], "p-a", 0, None)).written == 30
        assert sink.report() == {"indices": ["logs-web"]}
        sink.commit(SinkRun(("p-a", "p-b"), (report,)))
    finally:
        sink.close()
    assert refreshed(proxy) == [["logs-api", "logs-web"]]


def test_without_refresh_or_after_abort_no_refresh_is_sent_and_documents_stay(os_url: str, fault_proxy: Any) -> None:
    """Not committed, for an index: the documents written stay (a re-run overwrites them by id)."""
    from opensearchpy import OpenSearch

    proxy = fault_proxy(os_url)
    block = {"type": "opensearch", "hosts": [proxy.url], "index": "logs-{{ record.app }}", "refresh": True}
    _, report = write_partitions(block, partitions())
    sink = build("sink", block)
    sink.abort(SinkRun(("p-a", "p-b"), (report,)))
    sink.close()
    commit_run({**block, "refresh": False}, ["p-a", "p-b"], [report])
    assert refreshed(proxy) == []
    assert OpenSearch(hosts=[os_url]).count(index="logs-web,logs-api")["count"] == 50


def test_a_failed_plain_run_is_aborted_without_refresh(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    records = [*docs(10), *({"n": i} for i in range(10))]  # 10 without an id: dead letters
    summary = run_job({"job_name": "load", "runtime": {"error_rate_threshold": 0.1},
                       "source": {"type": "jsonl", "path": write_input(records)},
                       "destination": {"type": "opensearch", "hosts": [proxy.url], "index": "target",
                                       "refresh": True}})
    assert summary.status == "failed" and summary.written == 10
    assert summary.reports["destination"] == {"indices": ["target"]}
    assert refreshed(proxy) == []


def test_a_plain_run_refreshes_once_at_the_end(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    summary = run_job({"job_name": "load", "source": {"type": "jsonl", "path": write_input(docs(40))},
                       "destination": {"type": "opensearch", "hosts": [proxy.url], "index": "t-{{ record.app }}",
                                       "refresh": True}})
    assert summary.status == "succeeded", summary.error
    assert refreshed(proxy) == [["t-api", "t-db", "t-web"]]


def test_many_indices_are_refreshed_in_groups_that_keep_urls_short() -> None:
    names = [f"logs-2024-{i:04d}" for i in range(1000)]  # 15 characters each
    groups = url_groups(names, limit=160)
    assert [n for g in groups for n in g] == names
    assert all(len(",".join(g)) < 160 for g in groups) and len(groups[0]) == 10
    assert url_groups(["a" * 500], limit=160) == [["a" * 500]]  # a name longer than the limit goes alone
    assert url_groups([]) == []

