"""S3 staging (``staging.uri: s3://…``) against moto: keys under a root, paginated listing, chunked
deletes, retries, zstd batches, and the connection borrowed from the job's S3 component."""

from __future__ import annotations

from typing import Any

import pytest
import zstandard

from sluice import Batch, ConfigError, PermanentError
from sluice.context import RunContext
from sluice.records import Partition
from sluice.staged_io import StagedFolder, StagedInput, StagedSink, StagedSource
from sluice.staging import LocalStagingStore, StagingStore, open_store
from sluice.testing import load_test_job
from sluice_s3 import plugin
from sluice_s3.staging import S3StagingStore

from .helpers import BUCKET, FAST_RUNTIME, conn, keys, seed_many

ROOT = "staging/root"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def job_with(**components: Any) -> Any:
    """A loaded job: jsonl source and destination unless ``components`` replace them."""
    raw = {"job_name": "staged", "runtime": FAST_RUNTIME, "source": {"type": "jsonl", "path": "in"},
           "destination": {"type": "jsonl", "path": "out"}, **components}
    return load_test_job(raw)


def open_for(job: Any, options: dict[str, Any] | None = None, uri: str = f"s3://{BUCKET}/{ROOT}") -> StagingStore:
    return open_store(uri, options or {}, job, RunContext.for_job(job))


@pytest.fixture
def proxy(bucket: str, moto_url: str, fault_proxy: Any) -> Any:
    """A proxy in front of moto: it counts the store's requests and injects faults."""
    return fault_proxy(moto_url)


@pytest.fixture
def store(proxy: Any) -> Any:
    """The S3 store of a job whose destination is S3 behind the proxy."""
    s = open_for(job_with(destination={"type": "s3", "uri": f"s3://{BUCKET}/out", **conn(proxy.url)}))
    yield s
    s.close()


def seed_run(n: int) -> list[str]:
    """``n`` staged batches of run ``run`` plus neighbours the store must not mix in; returns the keys of ``run``."""
    batches = [f"run/extract/p/{i:08d}.jsonl.zst" for i in range(n)]
    seed_many(BUCKET, [(f"{ROOT}/{k}", b"x") for k in [*batches, "run/manifest.json"]])
    seed_many(BUCKET, [(f"{ROOT}/run10/manifest.json", b"x"), ("elsewhere/run/extract/p/0.jsonl.zst", b"x")])
    return sorted([*batches, "run/manifest.json"])


def test_the_plugin_serves_s3_uris_as_zstd_s3_stores(store: StagingStore) -> None:
    assert isinstance(store, S3StagingStore) and store.compression == "zstd"
    assert store.describe() == f"s3://{BUCKET}/{ROOT}"


def test_other_uris_are_left_to_core(bucket: str, tmp_path: Any) -> None:
    job = job_with()
    ctx = RunContext.for_job(job)
    assert plugin.sluice_staging_store(uri=str(tmp_path), options={}, job=job, ctx=ctx) is None
    assert plugin.sluice_staging_store(uri="file:///tmp/x", options={}, job=job, ctx=ctx) is None
    assert isinstance(open_for(job, uri=str(tmp_path)), LocalStagingStore)


def test_put_then_get_under_the_root_and_a_missing_key_is_none(s3: Any, store: StagingStore) -> None:
    store.put("run/plan.json", b'{"partitions": []}')
    store.put("run/plan.json", b'{"partitions": ["a"]}')  # replaced
    assert store.get("run/plan.json") == b'{"partitions": ["a"]}'
    assert keys(s3, "staging/") == [f"{ROOT}/run/plan.json"]
    assert store.get("run/missing.json") is None
    assert store.get_json("run/plan.json") == {"partitions": ["a"]}


def test_list_pages_through_every_key_sorted_and_relative_to_the_root(store: StagingStore, proxy: Any) -> None:
    expected = seed_run(1205)
    assert store.list("run") == expected
    assert proxy.count("GET", r"list-type=2") == 2, "1206 keys take two pages"
    assert store.list("run/") == expected
    assert store.list("run/extract/p")[:2] == ["run/extract/p/00000000.jsonl.zst", "run/extract/p/00000001.jsonl.zst"]
    assert store.list("nothing-here") == []


def test_delete_goes_in_chunks_of_1000_and_ignores_missing_keys(s3: Any, store: StagingStore, proxy: Any) -> None:
    run = seed_run(1205)
    store.delete([*run, "run/never-written.json"])
    assert proxy.count("POST", r"\?delete") == 2
    assert keys(s3, f"{ROOT}/run/") == []
    assert keys(s3) == ["elsewhere/run/extract/p/0.jsonl.zst", f"{ROOT}/run10/manifest.json"]


def test_delete_prefix_removes_only_that_folder(s3: Any, store: StagingStore) -> None:
    seed_run(3)
    store.delete_prefix("run")
    assert keys(s3) == ["elsewhere/run/extract/p/0.jsonl.zst", f"{ROOT}/run10/manifest.json"]


def test_keys_cannot_leave_the_root(store: StagingStore) -> None:
    with pytest.raises(ValueError, match="leaves the staging root"):
        store.put("../outside.json", b"x")


def test_transient_errors_are_retried_and_permanent_ones_are_one_clear_line(store: StagingStore, proxy: Any) -> None:
    slow = proxy.add(method="PUT", path=r"/run/a\.json", status=503, times=2)
    store.put("run/a.json", b"a")
    assert slow.fired == 2 and store.get("run/a.json") == b"a"
    proxy.add(method="GET", path=r"/run/a\.json", status=403, times=10)
    with pytest.raises(PermanentError, match=rf"^s3: reading staged s3://{BUCKET}/{ROOT}/run/a\.json at .* access"):
        store.get("run/a.json")


def test_staged_batches_are_zstd_objects_that_read_back_as_written(s3: Any, store: StagingStore) -> None:
    folder = StagedFolder(store, "run/extract")
    sink = StagedSink(folder)
    records = [{"n": i, "text": "staged " * 20} for i in range(50)]
    sink.write(Batch(records, "p", 0, None))
    sink.write(Batch(records[:5], "p", 2, None))

    (first, second) = keys(s3, f"{ROOT}/run/extract/")
    assert first == f"{ROOT}/run/extract/p/00000000.jsonl.zst" and second.endswith("00000002.jsonl.zst")
    body = s3.get_object(Bucket=BUCKET, Key=first)["Body"].read()
    assert body.startswith(ZSTD_MAGIC) and len(body) < len(b"".join(str(r).encode() for r in records))
    assert zstandard.ZstdDecompressor().stream_reader(body).read().count(b"\n") == 50

    source = StagedSource(StagedInput(folder, ("p",)))
    assert [(len(b.records), b.checkpoint) for b in source.read(Partition("p"))] == [(50, 0), (0, 1), (5, 2)]


# -- the connection -------------------------------------------------------------------------------
@pytest.mark.parametrize("component", ["destination", "source", "dead_letter"])
def test_the_connection_is_borrowed_from_the_jobs_first_s3_component(component: str, proxy: Any,
                                                                     moto_url: str) -> None:
    block = {"type": "s3", "uri": f"s3://{BUCKET}/elsewhere", "max_attempts": 2, **conn(proxy.url)}
    store = open_for(job_with(**{component: block}))
    try:
        store.put("run/x.json", b"x")
    finally:
        store.close()
    assert proxy.count("PUT", r"/run/x\.json") == 1, "the store reached S3 through the component's endpoint"
    assert isinstance(store, S3StagingStore) and store.conn.max_attempts == 2


def test_the_destination_comes_before_the_source(proxy: Any, moto_url: str) -> None:
    job = job_with(source={"type": "s3", "uri": f"s3://{BUCKET}/in", **conn(moto_url)},
                   destination={"type": "s3", "uri": f"s3://{BUCKET}/out", **conn(proxy.url)})
    store = open_for(job)
    store.close()
    assert isinstance(store, S3StagingStore) and store.conn.endpoint_url == proxy.url


def test_staging_options_win_over_the_components(s3: Any, proxy: Any, moto_url: str) -> None:
    job = job_with(destination={"type": "s3", "uri": f"s3://{BUCKET}/out", **conn(proxy.url)})
    store = open_for(job, {"endpoint_url": moto_url, "region": "us-east-1"})
    store.put("run/x.json", b"x")
    store.close()
    assert proxy.count() == 0 and keys(s3, "staging/") == [f"{ROOT}/run/x.json"]


def test_without_an_s3_component_the_aws_default_chain_is_used(bucket: str) -> None:
    store = open_for(job_with())
    store.close()
    assert isinstance(store, S3StagingStore) and store.conn.endpoint_url is None and store.conn.profile is None


def test_bad_staging_options_are_a_config_error_naming_the_field(bucket: str) -> None:
    with pytest.raises(ConfigError, match=r"^job 'staged': staging\.options: endpoint: Extra inputs"):
        open_for(job_with(), {"endpoint": "http://typo"})


def test_conditional_puts_let_one_writer_win(store: StagingStore, proxy: Any) -> None:
    assert store.put_if("run/lease.json", b"first", None)
    assert not store.put_if("run/lease.json", b"second", None), "If-None-Match: * refuses an existing key"
    data, version = store.get_versioned("run/lease.json")
    assert data == b"first"
    assert store.put_if("run/lease.json", b"third", version)
    assert not store.put_if("run/lease.json", b"fourth", version), "If-Match refuses a stale version"
    assert store.get("run/lease.json") == b"third"
    assert any(s.method == "PUT" and s.status == 412 for s in proxy.seen)  # decided by S3, not by us


def test_the_run_lease_holds_on_s3(store: StagingStore) -> None:
    from datetime import timedelta

    from sluice.lease import Lease, LeaseHeld

    first = Lease(store, "run/lease.json", "scheduled__1", timedelta(minutes=5), "job 'j'")
    second = Lease(store, "run/lease.json", "manual__2", timedelta(minutes=5), "job 'j'")
    first.acquire()
    first.acquire()  # renewing
    with pytest.raises(LeaseHeld, match="is being run by 'scheduled__1'"):
        second.acquire()
    first.release()
    second.acquire()
