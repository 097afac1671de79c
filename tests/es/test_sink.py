"""Bulk loading against a real OpenSearch-compatible server: ids, op types, dead letters, indices."""

from __future__ import annotations

from typing import Any

from sluice.testing import read_jsonl, run_job

from .helpers import FAST_RETRY, docs, fetch_all, write_input


def load(url: str, records: list[dict[str, Any]], **sink: Any) -> Any:
    block = {"type": "elasticsearch", "hosts": [url], "index": "target", "refresh": True, **sink}
    return run_job({"job_name": "load", "runtime": {"retry": FAST_RETRY, "error_rate_threshold": 1},
                    "source": {"type": "jsonl", "path": write_input(records)}, "destination": block})


def test_loading_twice_gives_the_same_documents(os_url: str) -> None:
    records = docs(1200)
    first = load(os_url, records)
    assert first.status == "succeeded", first.error
    before = fetch_all(os_url, "target")
    second = load(os_url, records)
    assert second.status == "succeeded" and second.written == 1200
    after = fetch_all(os_url, "target")
    assert len(after) == 1200 and after == before
    assert after["d-5"] == {"n": 5, "app": "db", "msg": "message 5", "ts": "2024-01-03T05:00:00Z"}


def test_update_upserts_partial_documents(os_url: str) -> None:
    load(os_url, docs(10))
    summary = load(os_url, [{"_id": "d-1", "msg": "changed"}, {"_id": "new", "msg": "inserted"}], op_type="update")
    assert summary.status == "succeeded", summary.error
    stored = fetch_all(os_url, "target")
    assert stored["d-1"] == {"n": 1, "app": "api", "msg": "changed", "ts": "2024-01-02T01:00:00Z"}
    assert stored["new"] == {"msg": "inserted"} and len(stored) == 11


def test_mapping_conflicts_go_to_dead_letters_while_the_rest_loads(os_url: str) -> None:
    from opensearchpy import OpenSearch

    OpenSearch(hosts=[os_url]).indices.create(index="target", body={"mappings": {
        "dynamic": "strict", "properties": {"n": {"type": "long"}, "msg": {"type": "keyword"}}}})
    records = [{"_id": f"ok-{i}", "n": i, "msg": "fine"} for i in range(50)]
    records += [{"_id": "bad-type", "n": "not a number", "msg": "x"}, {"_id": "bad-field", "n": 1, "extra": True}]
    summary = load(os_url, records)
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled and summary.written == 50 and summary.dead_lettered == {"sink": 2}
    assert len(fetch_all(os_url, "target")) == 50
    dead = {d["record"]["_id"]: d for d in read_jsonl(".sluice/dead_letters")}
    assert dead["bad-type"]["error_type"] == "mapper_parsing_exception"
    assert dead["bad-field"]["error_type"] == "strict_dynamic_mapping_exception"
    assert "extra" in dead["bad-field"]["reason"] and dead["bad-field"]["stage"] == "sink"
    assert dead["bad-type"]["record"] == {"_id": "bad-type", "n": "not a number", "msg": "x"}
    assert dead["bad-type"]["context"]["status"] == 400


def test_create_on_existing_ids_counts_as_written(os_url: str) -> None:
    load(os_url, docs(30))
    summary = load(os_url, [{**d, "msg": "second"} for d in docs(40)], op_type="create")
    assert summary.status == "succeeded", summary.error
    assert summary.written == 40 and summary.dead_lettered == {}
    assert summary.counters["es_create_conflicts"] == 30
    stored = fetch_all(os_url, "target")
    assert len(stored) == 40 and stored["d-0"]["msg"] == "message 0" and stored["d-35"]["msg"] == "second"


def test_index_per_record_ids_from_a_field_and_routing(os_url: str) -> None:
    records = [{"key": f"k{i}", "app": ("web", "api")[i % 2], "day": "2024-01-01"} for i in range(20)]
    summary = load(os_url, records, index="logs-{{ record.app }}-{{ record.day }}", id="key",
                   routing="{{ record.app }}")
    assert summary.status == "succeeded", summary.error
    web = fetch_all(os_url, "logs-web-2024-01-01")
    assert len(web) == 10 and web["k0"] == {"key": "k0", "app": "web", "day": "2024-01-01"}
    assert len(fetch_all(os_url, "logs-api-2024-01-01")) == 10


def test_hashed_ids_are_stable_and_auto_ids_duplicate(os_url: str) -> None:
    records = [{"user": f"u{i}", "event": "login", "n": i} for i in range(15)]
    load(os_url, records, id_fields=["user", "event"])
    load(os_url, records, id_fields=["user", "event"])
    assert len(fetch_all(os_url, "target")) == 15
    load(os_url, records, index="auto", id="auto")
    load(os_url, records, index="auto", id="auto")
    assert len(fetch_all(os_url, "auto")) == 30  # what id: auto means: a re-run adds documents


def test_records_without_an_id_are_dead_letters_not_duplicates(os_url: str) -> None:
    summary = load(os_url, [{"_id": "a", "n": 1}, {"n": 2}])
    assert summary.written == 1 and summary.dead_lettered == {"sink": 1}
    assert read_jsonl(".sluice/dead_letters")[0]["error_type"] == "MissingId"


def test_delete_removes_documents_and_missing_ones_are_fine(os_url: str) -> None:
    load(os_url, docs(10))
    summary = load(os_url, [{"_id": "d-1"}, {"_id": "d-2"}, {"_id": "never-there"}], op_type="delete")
    assert summary.status == "succeeded" and summary.written == 3
    assert set(fetch_all(os_url, "target")) == {f"d-{i}" for i in range(10)} - {"d-1", "d-2"}


def test_index_is_created_with_mappings_before_the_first_write(os_url: str) -> None:
    from opensearchpy import OpenSearch

    mappings = {"properties": {"n": {"type": "keyword"}}}
    summary = load(os_url, docs(5), create_index={"mappings": mappings, "settings": {"number_of_shards": 1}})
    assert summary.status == "succeeded", summary.error
    got = OpenSearch(hosts=[os_url]).indices.get_mapping(index="target")
    assert got["target"]["mappings"]["properties"]["n"] == {"type": "keyword"}
    assert len(fetch_all(os_url, "target")) == 5


def test_es_to_es_reindex_keeps_ids_and_index_names(os_url: str, seeded: Any) -> None:
    seeded("logs-a", 300)
    seeded("logs-b", 200, start=300)
    summary = run_job({
        "job_name": "reindex",
        "source": {"type": "elasticsearch", "hosts": [os_url], "index": "logs-*", "include_index": True,
                   "slices": 2},
        "destination": {"type": "elasticsearch", "hosts": [os_url], "index": "copy-{{ record._index }}",
                        "refresh": True},
    })
    assert summary.status == "succeeded", summary.error
    assert summary.reconciled and summary.written == 500
    assert fetch_all(os_url, "copy-logs-a") == fetch_all(os_url, "logs-a")
    assert fetch_all(os_url, "copy-logs-b") == fetch_all(os_url, "logs-b")


def test_a_record_the_index_template_cannot_render_is_a_dead_letter(os_url: str) -> None:
    summary = load(os_url, [{"_id": "a", "app": "web"}, {"_id": "b"}], index="logs-{{ record.app }}")
    assert summary.written == 1 and summary.dead_lettered == {"sink": 1}
    dead = read_jsonl(".sluice/dead_letters")[0]
    assert dead["error_type"] == "TemplateError" and "app" in dead["reason"] and dead["record"] == {"_id": "b"}


def test_bulk_requests_are_cut_by_documents_and_bytes(os_url: str, fault_proxy: Any) -> None:
    proxy = fault_proxy(os_url)
    records = [{"_id": f"d{i}", "pad": "x" * 1000} for i in range(100)]
    summary = load(proxy.url, records, batch_size=30)
    assert summary.written == 100 and proxy.count("POST", r"/_bulk") == 4  # 30 + 30 + 30 + 10
    proxy.clear()
    summary = load(proxy.url, records, max_bytes=10 * 1024, http_compress=True)
    # each action is ~1,050 bytes, so 9 fit in 10 KiB: 12 requests
    assert summary.written == 100 and proxy.count("POST", r"/_bulk") == 12
    assert len(fetch_all(os_url, "target")) == 100


def test_the_ingest_pipeline_is_named_and_its_refusals_are_dead_letters(os_url: str, fault_proxy: Any) -> None:
    """The test server has no ingest pipelines: every item is refused with the reason, as a cluster
    would answer for a pipeline that does not exist."""
    proxy = fault_proxy(os_url)
    summary = load(proxy.url, docs(10), pipeline="enrich")
    assert summary.status == "succeeded", summary.error  # error_rate_threshold is 1 here
    assert proxy.count("POST", r"/_bulk\?.*pipeline=enrich") == 1
    assert summary.written == 0 and summary.dead_lettered == {"sink": 10}
    dead = read_jsonl(".sluice/dead_letters")
    assert {d["error_type"] for d in dead} == {"illegal_argument_exception"}
    assert "pipeline with id [enrich] does not exist" in dead[0]["reason"]
