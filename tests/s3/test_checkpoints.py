"""The S3 checkpoint store: one object per partition, loaded back, cleared for a fresh run."""

from __future__ import annotations

from typing import Any

from sluice.testing import build

from .helpers import BUCKET, conn, keys


def test_save_load_and_clear(s3: Any, bucket: str, moto_url: str) -> None:
    store = build("checkpoint_store", {"type": "s3", "uri": f"s3://{BUCKET}/cp", **conn(moto_url)})
    assert store.load("job", "run-1") == {}
    store.save("job", "run-1", "keys-00000", {"seq": 3, "position": {"key": "a", "line": 9}, "done": False})
    store.save("job", "run-1", "weird/partition key", {"seq": 0, "position": None, "done": True})
    store.save("job", "run-1", "keys-00000", {"seq": 4, "position": {"key": "b", "line": 1}, "done": False})
    store.save("job", "run-2", "keys-00000", {"seq": 1, "position": None, "done": True})
    assert store.load("job", "run-1") == {
        "keys-00000": {"seq": 4, "position": {"key": "b", "line": 1}, "done": False},
        "weird/partition key": {"seq": 0, "position": None, "done": True},
    }
    assert len(keys(s3, "cp/job/run-1/")) == 2  # one object per partition: each save is one atomic PUT
    store.clear("job", "run-1")
    assert store.load("job", "run-1") == {}
    assert store.load("job", "run-2") != {}
