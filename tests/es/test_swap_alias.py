"""``swap_alias: true``: every run builds a new index; commit swaps the alias readers query onto it.

Against a real OpenSearch-compatible server: what readers see through the alias before and after
each step, which indices exist, and that prepare, the loads and commit work from separate
processes and may each run again alone.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Callable
from typing import Any

import pytest

from sluice import ConfigError, JobFailed, SinkRun
from sluice.templating import Interval
from sluice.testing import build, make_context, run_job
from sluice.testing.conformance import SinkContract, commit_run, prepare_run, write_partitions
from sluice_es.errors import AliasSwapRefused
from sluice_es.swap import Names

from .helpers import FAST_RETRY, docs, fetch_all, write_input

ALIAS = "logs-2024-01-01"  # what index: logs-{{ ds }} renders to for the test day


def block(url: str, **options: Any) -> dict[str, Any]:
    return {"type": "opensearch", "hosts": [url], "index": "logs-{{ ds }}", "swap_alias": True, **options}


def aliases(url: str) -> dict[str, list[str]]:
    """Every alias on the cluster and the indices it points at."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    out: dict[str, list[str]] = {}
    for index, body in client.indices.get_alias().items():
        for alias in body["aliases"]:
            out.setdefault(alias, []).append(index)
    client.close()
    return {a: sorted(i) for a, i in out.items()}


def indices(url: str) -> list[str]:
    """Every index whose name starts with the alias (the build indices, and nothing else here)."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    names = sorted(client.indices.get_alias(index=f"{ALIAS}*"))
    client.close()
    return names


def numbers(url: str, name: str = ALIAS) -> list[int]:
    """The ``n`` of every document readers find under ``name``."""
    return sorted(d["n"] for d in fetch_all(url, name).values())


def parts(start: int = 0) -> list[tuple[str, list[dict[str, Any]]]]:
    return [("p-a", docs(30, start)), ("p-b", docs(20, start + 30))]


def staged_run(sink: dict[str, Any], start: int = 0) -> str:
    """Prepare, write two partitions, commit (one process); returns the index published."""
    prepare_run(sink)
    _, report = write_partitions(sink, parts(start))
    commit_run(sink, ["p-a", "p-b"], [report])
    return str(report["indices"][0])


def test_a_run_publishes_a_new_index_and_deletes_the_one_it_replaces(os_url: str) -> None:
    def run(records: list[dict[str, Any]]) -> Any:
        return run_job({"job_name": "daily", "runtime": {"retry": FAST_RETRY},
                        "source": {"type": "jsonl", "path": write_input(records)}, "destination": block(os_url)})

    first = run(docs(30))
    assert first.status == "succeeded", first.error
    [one] = indices(os_url)
    assert re.fullmatch(rf"{ALIAS}-\d{{8}}-\d{{6}}-\d{{6}}", one) and aliases(os_url) == {ALIAS: [one]}
    assert first.reports["destination"] == {"indices": [one]}
    assert numbers(os_url) == list(range(30))

    second = run(docs(10, start=100))  # the interval's data changed: the new index holds only it
    assert second.status == "succeeded", second.error
    [two] = indices(os_url)
    assert two != one and aliases(os_url) == {ALIAS: [two]}
    assert numbers(os_url) == list(range(100, 110))


def test_readers_see_the_old_or_the_new_complete_index_never_a_mix(os_url: str) -> None:
    sink = block(os_url)
    old = staged_run(sink)
    prepare_run(sink)  # the interval runs again
    assert aliases(os_url)[ALIAS] == [old] and numbers(os_url) == list(range(50))
    _, report_a = write_partitions(sink, parts(100)[:1])
    [new] = report_a["indices"]
    assert new != old and aliases(os_url) == {ALIAS: [old], f"{ALIAS}-loading": [new]}
    assert numbers(os_url) == list(range(50)), "half a run is invisible"
    assert numbers(os_url, new) == list(range(100, 130))
    _, report_b = write_partitions(sink, parts(100)[1:])
    assert numbers(os_url) == list(range(50))

    commit_run(sink, ["p-a", "p-b"], [report_a, report_b])

    assert aliases(os_url) == {ALIAS: [new]} and indices(os_url) == [new]
    assert numbers(os_url) == list(range(100, 150))


def test_prepare_then_two_loads_in_two_processes_then_commit_in_a_third(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    sink = block(proxy.url, create_index={"settings": {"refresh_interval": "-1"},
                                          "mappings": {"properties": {"n": {"type": "long"}}}})
    old = staged_run(block(os_url))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.apply(prepare_run, (sink,))
        results = pool.starmap(write_partitions, [(sink, [part]) for part in parts(100)])
        reports = [report for _, report in results]
        assert [n for n, _ in results] == [30, 20] and reports[0] == reports[1]
        [new] = reports[0]["indices"]
        assert proxy.count("POST", r"/_aliases") == 0 and aliases(os_url)[ALIAS] == [old]
        pool.apply(commit_run, (sink, ["p-a", "p-b"], reports))

    assert aliases(os_url) == {ALIAS: [new]} and indices(os_url) == [new]
    assert proxy.count("POST", r"/_aliases") == 1, "one atomic swap"
    assert proxy.count("POST", rf"/{new}/_refresh") == 1, "refreshed before readers switch to it"
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[os_url])
    got = client.indices.get(index=new)[new]
    assert got["mappings"]["properties"]["n"] == {"type": "long"}, "create_index is the build index's body"
    assert got["settings"]["index"]["refresh_interval"] == "-1"
    assert client.count(index=ALIAS)["count"] == 50  # no refresh by the test
    client.close()


def abort(sink: dict[str, Any]) -> None:
    """Abort the run from a fresh instance (a staged run's finalize over the threshold)."""
    aborting = build("sink", sink)
    try:
        aborting.abort(SinkRun(("p-a", "p-b")))
    finally:
        aborting.close()


def test_abort_keeps_readers_on_the_published_index_and_sets_the_attempt_aside(os_url: str) -> None:
    sink = block(os_url)
    old = staged_run(sink)
    prepare_run(sink)
    written, report = write_partitions(sink, parts(100))
    [attempt] = report["indices"]

    abort(sink)

    assert written == 50 and numbers(os_url) == list(range(50))
    assert aliases(os_url) == {ALIAS: [old], f"{ALIAS}-aborted": [attempt]}, "no loading alias any more"
    assert numbers(os_url, attempt) == list(range(100, 150)), "kept, unseen, for a resume"
    abort(sink)  # aborting again changes nothing
    assert aliases(os_url) == {ALIAS: [old], f"{ALIAS}-aborted": [attempt]}


def test_a_fresh_attempt_after_an_abort_deletes_it_and_builds_with_the_current_body(os_url: str) -> None:
    sink = block(os_url, create_index={"mappings": {"properties": {"n": {"type": "keyword"}}}})
    old = staged_run(sink)
    prepare_run(sink)
    _, report = write_partitions(sink, parts(100))
    abort(sink)
    fixed = {**sink, "create_index": {"mappings": {"properties": {"n": {"type": "long"}}}}}

    prepare_run(fixed)  # the interval run again from the start (plan), the mapping fixed meanwhile

    [building] = aliases(os_url)[f"{ALIAS}-loading"]
    assert indices(os_url) == sorted([old, building]) and report["indices"] != [building]
    from opensearchpy import OpenSearch

    mapping = OpenSearch(hosts=[os_url]).indices.get_mapping(index=building)[building]["mappings"]
    assert mapping["properties"]["n"] == {"type": "long"}
    assert numbers(os_url, building) == [] and f"{ALIAS}-aborted" not in aliases(os_url)


def test_resume_after_an_abort_continues_the_same_index(os_url: str) -> None:
    """The engine saved the checkpoints of what the aborted attempt wrote: --resume must find it."""
    sink = block(os_url)
    staged_run(sink)
    prepare_run(sink)
    _, first = write_partitions(sink, parts(100)[:1])
    abort(sink)
    resuming = build("sink", sink)
    try:
        resuming.prepare(SinkRun(resume=True))
        assert resuming.report() == first
    finally:
        resuming.close()
    _, second = write_partitions(sink, parts(100)[1:])
    commit_run(sink, ["p-a", "p-b"], [first, second])
    assert aliases(os_url) == {ALIAS: first["indices"]} and numbers(os_url) == list(range(100, 150))


def test_a_load_and_finalize_run_again_after_an_abort_publish_the_attempt(os_url: str) -> None:
    """A load task cleared after the failed finalize writes into the aborted attempt's index, unseen;
    a finalize that passes then publishes that index."""
    sink = block(os_url)
    staged_run(sink)
    prepare_run(sink)
    _, report_a = write_partitions(sink, parts(100)[:1])
    _, report_b = write_partitions(sink, parts(100)[1:])
    abort(sink)
    _, again = write_partitions(sink, [("p-b", [{**d, "msg": "again"} for d in parts(100)[1][1]])])
    assert again == report_b and numbers(os_url) == list(range(50))
    commit_run(sink, ["p-a", "p-b"], [report_a, again])
    assert aliases(os_url) == {ALIAS: report_a["indices"]} and numbers(os_url) == list(range(100, 150))
    assert {d["msg"] for d in fetch_all(os_url, ALIAS).values() if d["n"] >= 130} == {"again"}


def test_a_plain_run_that_failed_half_way_resumes_into_the_index_it_began(os_url: str, fault_proxy: Any) -> None:
    """Through the engine: the first file is written and checkpointed, the second fails; abort sets
    the attempt aside, and --resume writes only the second file into the same index."""
    from pathlib import Path

    proxy = fault_proxy(os_url)
    Path("in").mkdir()
    write_input(docs(30), "in/a.jsonl")
    write_input(docs(20, start=30), "in/b.jsonl")
    seen = []

    def refuse_the_second(status: int, headers: dict[str, str], request: bytes, body: bytes) -> Any:
        seen.append(request)
        return (status, headers, body) if len(seen) == 1 else (400, headers, b'{"error": "injected", "status": 400}')

    proxy.add(method="POST", path=r"/_bulk", rewrite=refuse_the_second, times=2)
    job = {"job_name": "daily", "runtime": {"retry": FAST_RETRY, "max_workers": 1},
           "source": {"type": "jsonl", "path": "in"}, "destination": block(proxy.url)}
    failed = run_job(job)
    assert failed.status == "failed" and failed.written == 30
    [attempt] = aliases(os_url)[f"{ALIAS}-aborted"]
    assert ALIAS not in aliases(os_url), "nothing published"

    resumed = run_job(job, resume=True)

    assert resumed.status == "succeeded", resumed.error
    assert resumed.written == 20, "only the second file was read again"
    assert aliases(os_url) == {ALIAS: [attempt]} and numbers(os_url) == list(range(50))


def test_a_run_that_wrote_nothing_publishes_the_empty_index_it_built(os_url: str) -> None:
    sink = block(os_url)
    staged_run(sink)
    prepare_run(sink)
    [empty] = aliases(os_url)[f"{ALIAS}-loading"]
    commit_run(sink, [], [])  # the source had no partitions this time
    assert aliases(os_url) == {ALIAS: [empty]} and numbers(os_url) == []


def test_a_load_without_any_prepare_refuses(os_url: str) -> None:
    with pytest.raises(AliasSwapRefused, match="prepare the run first"):
        write_partitions(block(os_url), parts()[:1])
    assert aliases(os_url) == {} and indices(os_url) == []


def test_committing_again_changes_nothing(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    sink = block(proxy.url)
    prepare_run(sink)
    _, report = write_partitions(sink, parts())
    commit_run(sink, ["p-a", "p-b"], [report])
    published = aliases(os_url)
    proxy.clear()

    commit_run(sink, ["p-a", "p-b"], [report])

    assert aliases(os_url) == published and numbers(os_url) == list(range(50))
    assert proxy.count("POST", r"/_aliases") == 0 and proxy.count("DELETE") == 0


def test_a_load_run_alone_after_commit_writes_into_the_published_index(os_url: str) -> None:
    sink = block(os_url)
    published = staged_run(sink)
    changed = [{**d, "msg": "again"} for d in docs(30)]
    _, report = write_partitions(sink, [("p-a", changed)])  # one load task cleared after success
    assert report == {"indices": [published]}
    assert {d["msg"] for d in fetch_all(os_url, ALIAS).values() if d["n"] < 30} == {"again"}
    commit_run(sink, ["p-a", "p-b"], [report, {"indices": [published]}])  # finalize again
    assert aliases(os_url) == {ALIAS: [published]} and numbers(os_url) == list(range(50))


def test_a_plan_run_again_alone_after_success_is_cleaned_up_by_commit(os_url: str) -> None:
    sink = block(os_url)
    published = staged_run(sink)
    prepare_run(sink)  # an empty build index nobody loads
    [stray] = aliases(os_url)[f"{ALIAS}-loading"]
    commit_run(sink, ["p-a", "p-b"], [{"indices": [published]}])
    assert aliases(os_url) == {ALIAS: [published]} and indices(os_url) == [published]
    assert stray != published


def test_prepare_called_again_continues_the_same_build_index(os_url: str, fault_proxy: Any) -> None:
    """Even when the answer to the create request is lost and the whole prepare is retried."""
    proxy = fault_proxy(os_url)
    cut = proxy.add(method="PUT", path=rf"/{ALIAS}-\d", truncate=True)  # created, but the answer is cut
    sink = build("sink", block(proxy.url), make_context(retry=FAST_RETRY))
    sink.prepare(SinkRun())
    sink.close()
    prepare_run(block(os_url))
    [building] = indices(os_url)
    assert aliases(os_url) == {f"{ALIAS}-loading": [building]}
    assert cut.fired == 1 and proxy.count("PUT") == 1


def test_a_commit_whose_answer_is_lost_is_run_again_from_the_cluster_state(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    old = staged_run(block(os_url))
    prepare_run(block(os_url))
    _, report = write_partitions(block(os_url), parts(100))
    cut = proxy.add(method="POST", path=r"/_aliases", truncate=True)  # applied, but the answer is cut
    sink = build("sink", block(proxy.url), make_context(retry=FAST_RETRY))
    sink.commit(SinkRun(("p-a", "p-b"), (report,)))
    sink.close()
    assert cut.fired == 1 and proxy.count("POST", r"/_aliases") == 1, "the second attempt found the swap done"
    assert aliases(os_url) == {ALIAS: report["indices"]} and old not in indices(os_url)


def test_loads_that_wrote_different_indices_fail_the_commit_and_change_nothing(os_url: str) -> None:
    sink = block(os_url)
    published = staged_run(sink)
    with pytest.raises(AliasSwapRefused, match="wrote into different indices"):
        commit_run(sink, ["p-a", "p-b"], [{"indices": [published]}, {"indices": [f"{ALIAS}-20990101-000000-000000"]}])
    assert aliases(os_url) == {ALIAS: [published]}


def test_an_index_that_no_longer_exists_is_not_published(os_url: str) -> None:
    sink = block(os_url)
    published = staged_run(sink)
    with pytest.raises(AliasSwapRefused, match="no longer exists"):
        commit_run(sink, ["p-a"], [{"indices": [f"{ALIAS}-20990101-000000-000000"]}])
    assert aliases(os_url) == {ALIAS: [published]}


def test_a_plain_index_with_the_alias_name_fails_clearly_and_is_kept(os_url: str, seeded: Any) -> None:
    seeded(ALIAS, 10)
    summary = run_job({"job_name": "daily", "source": {"type": "jsonl", "path": write_input(docs(5))},
                       "destination": block(os_url)})
    assert summary.status == "failed"
    assert f"{ALIAS!r} is a plain index" in summary.error and "Migrate once" in summary.error
    assert "never deletes it" in summary.error
    assert len(fetch_all(os_url, ALIAS)) == 10 and indices(os_url) == [ALIAS] and aliases(os_url) == {}
    with pytest.raises(AliasSwapRefused, match="plain index"):
        commit_run(block(os_url), ["p-a"], [])


@pytest.mark.parametrize(("options", "message"), [
    ({"index": "logs-{{ record.app }}-{{ ds }}"}, "is rendered per record"),
    ({"index": None}, "swap_alias needs index"),
    ({"op_type": "delete"}, "nothing to delete"),
    ({"create_index": {"aliases": {"everything": {}}}}, "create_index.aliases"),
])
def test_the_config_refuses_what_cannot_build_one_index_per_run(options: dict[str, Any], message: str) -> None:
    from sluice.registry import get_registry

    raw = {k: v for k, v in {**block("http://localhost:9200"), **options}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        get_registry().validate("sink", raw, "destination")


def test_an_alias_name_that_would_be_a_pattern_is_refused() -> None:
    with pytest.raises(AliasSwapRefused, match="not a usable alias name"):
        build("sink", block("http://localhost:1", index="logs-*"))


def test_build_index_names_sort_by_time_and_name_their_alias() -> None:
    from datetime import UTC, datetime

    names = Names("logs-2024-01-01")
    assert names.build(datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "logs-2024-01-01-20240102-030405-000006"
    assert (names.loading, names.aborted) == ("logs-2024-01-01-loading", "logs-2024-01-01-aborted")


def test_a_finalize_over_the_error_threshold_leaves_readers_on_the_previous_index(os_url: str) -> None:
    """Through core's staged steps: the destination refuses documents (a mapping conflict) at load,
    so only finalize sees the error rate; its abort withdraws everything the loads wrote."""
    from sluice import stages

    day = Interval.for_day("2024-01-01")

    def job(records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"job_name": "daily", "runtime": {"retry": FAST_RETRY, "error_rate_threshold": 0.1},
                "source": {"type": "jsonl", "path": write_input(records)},
                "destination": block(os_url, create_index={"mappings": {"properties": {"n": {"type": "long"}}}})}

    def run(records: list[dict[str, Any]]) -> dict[str, Any]:
        raw = job(records)
        keys = stages.plan(raw, day)["partitions"]
        for key in keys:
            stages.extract(raw, day, key)
        for key in keys:
            assert stages.load(raw, day, key)["reports"]["destination"]["indices"]
        return stages.finalize(raw, day)

    assert run(docs(40))["written"] == 40
    [published] = indices(os_url)
    bad = [*docs(30, start=100), *({"_id": f"bad-{i}", "n": "not a number"} for i in range(10))]
    with pytest.raises(JobFailed, match=r"exceeds error_rate_threshold.*not committed"):
        run(bad)

    [attempt] = aliases(os_url)[f"{ALIAS}-aborted"]
    assert aliases(os_url) == {ALIAS: [published], f"{ALIAS}-aborted": [attempt]}
    assert numbers(os_url) == list(range(40)), "readers keep the previous index"
    assert len(numbers(os_url, attempt)) == 30, "the attempt's good documents, unseen"

    assert run(docs(25, start=200))["written"] == 25  # the interval run again from plan
    [final] = indices(os_url)
    assert aliases(os_url) == {ALIAS: [final]} and numbers(os_url) == list(range(200, 225))


class TestSwapAliasSink(SinkContract):
    """The shared two-phase contract; a run rebuilds the index, so commit also drops partitions
    the run no longer has."""

    @pytest.fixture
    def sink_block(self, os_url: str) -> dict[str, Any]:
        return {"type": "opensearch", "hosts": [os_url], "index": "target", "swap_alias": True}

    @pytest.fixture
    def read_back(self, os_url: str) -> Callable[[], list[dict[str, Any]]]:
        return lambda: list(fetch_all(os_url, "target").values())


class TestElasticsearchFlavourSwapAliasSink(TestSwapAliasSink):
    @pytest.fixture
    def sink_block(self, os_url: str) -> dict[str, Any]:
        return {"type": "elasticsearch", "hosts": [os_url], "index": "target", "swap_alias": True,
                "flavor": "elasticsearch", "compat_headers": False, "create_index": {}}
