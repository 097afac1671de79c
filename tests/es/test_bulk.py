"""Bulk bodies and per-item response handling (pure logic, no server)."""

from __future__ import annotations

import orjson
import pytest

from sluice_es.bulk import ActionBuilder, chunks, hash_id, read_response


def lines(payload: bytes) -> list[dict]:
    return [orjson.loads(line) for line in payload.splitlines()]


def builder(op: str = "index", id_field: str = "_id", id_fields=None, index: str | None = "idx", routing=None):
    index_of = (lambda r: index) if index else None
    return ActionBuilder(op, id_field, id_fields, index_of, routing, 3)


def test_id_and_index_come_out_of_the_stored_document() -> None:
    actions, dead = builder(index=None).build([{"_id": "a", "_index": "src", "x": 1}])
    assert not dead
    assert lines(actions[0].payload) == [{"index": {"_index": "src", "_id": "a"}}, {"x": 1}]


def test_update_is_an_upsert_and_delete_has_no_body() -> None:
    upd, _ = builder("update").build([{"_id": "a", "x": 1}])
    assert lines(upd[0].payload) == [{"update": {"_index": "idx", "_id": "a", "retry_on_conflict": 3}},
                                     {"doc": {"x": 1}, "doc_as_upsert": True}]
    dele, _ = builder("delete").build([{"_id": "a", "x": 1}])
    assert lines(dele[0].payload) == [{"delete": {"_index": "idx", "_id": "a"}}]


def test_ids_from_a_field_a_hash_or_the_cluster() -> None:
    by_field, _ = builder(id_field="key").build([{"key": 7, "x": 1}])
    assert lines(by_field[0].payload)[0]["index"]["_id"] == "7"
    by_hash, _ = builder(id_fields=["a", "b"]).build([{"a": 1, "b": "x", "c": 1}, {"b": "x", "a": 1, "c": 2}])
    assert by_hash[0].id == by_hash[1].id == hash_id({"a": 1, "b": "x"}, ["a", "b"])
    auto, _ = builder(id_field="auto").build([{"x": 1}])
    assert "_id" not in lines(auto[0].payload)[0]["index"]


def test_a_record_without_its_id_or_index_is_a_dead_letter() -> None:
    actions, dead = builder().build([{"x": 1}])
    assert not actions and dead[0].error_type == "MissingId" and "'_id'" in dead[0].reason
    actions, dead = builder(index=None).build([{"_id": "a"}])
    assert not actions and dead[0].error_type == "MissingIndex"


def test_chunks_respect_count_and_bytes() -> None:
    actions, _ = builder().build([{"_id": str(i), "pad": "x" * 100} for i in range(10)])
    assert [len(c) for c in chunks(actions, 4, 10_000)] == [4, 4, 2]
    size = len(actions[0].payload)
    assert [len(c) for c in chunks(actions, 100, size * 3)] == [3, 3, 3, 1]


def test_items_are_sorted_into_written_retry_and_dead_letters() -> None:
    actions, _ = builder("create").build([{"_id": str(i)} for i in range(5)])
    response = {"errors": True, "items": [
        {"create": {"status": 201}},
        {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "exists"}}},
        {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "busy"}}},
        {"create": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad n"}}},
        {"create": {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "down"}}},
    ]}
    out = read_response("create", actions, response)
    assert out.written == 2 and out.conflicts == 1
    assert [a.id for a in out.retry] == ["2", "4"]
    assert out.dead[0].error_type == "mapper_parsing_exception"
    assert out.dead[0].reason == "400 mapper_parsing_exception: bad n"
    assert out.dead[0].record == {"_id": "3"} and out.dead[0].context["status"] == 400


def test_a_response_that_does_not_match_the_request_is_refused() -> None:
    actions, _ = builder().build([{"_id": "a"}, {"_id": "b"}])
    with pytest.raises(ValueError):
        read_response("index", actions, {"errors": False, "items": [{"index": {"status": 201}}]})
