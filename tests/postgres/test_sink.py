"""The postgres sink end to end from JSON Lines: modes, column mapping, create_table, and the
errors a job meets before any data moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice.testing import read_jsonl, run_job

from .helpers import Db, job, write_jsonl


def load(pg: Db, tmp_path: Path, records: list[dict[str, Any]], destination: dict[str, Any], name: str = "load",
         files: int = 1, **extra: Any) -> Any:
    """Run a jsonl → postgres job over ``records`` (split over ``files`` partitions)."""
    folder = tmp_path / f"in-{name}"
    for f in range(files):
        write_jsonl(folder / f"part-{f}.jsonl", records[f::files])
    extra.setdefault("dead_letter", {"type": "jsonl", "path": str(tmp_path / f"dead-{name}")})
    return run_job(job(name, {"type": "jsonl", "path": str(folder)}, destination, **extra), ds="2024-01-01")


def dead_letters(tmp_path: Path, name: str = "load") -> list[dict[str, Any]]:
    folder = tmp_path / f"dead-{name}"
    return read_jsonl(folder) if folder.exists() else []


def test_append_loads_every_record_and_one_checkpoint_row_per_batch(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE events (id integer, name text, payload jsonb)")
    records = [{"id": i, "name": f"r{i}", "payload": {"i": i, "tags": ["a"]}} for i in range(45)]
    summary = load(pg, tmp_path, records, pg.sink(), files=2)
    assert summary.status == "succeeded" and summary.written == 45 and summary.reconciled
    rows = pg.sql("SELECT id, name, payload FROM events ORDER BY id")
    assert rows == [(r["id"], r["name"], r["payload"]) for r in records]
    assert len(pg.ledger()) == 6  # 23 + 22 records in batches of 10: 3 batches per partition


def test_dotted_paths_the_whole_record_and_the_rest(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE events (id text, ms integer, doc jsonb, rest jsonb)")
    record = {"id": "a", "latency": {"ms": 12, "unit": "ms"}, "app": "web"}
    flat = {"id": "b", "latency.ms": 7, "app": "api"}  # a flat record with a dotted key
    summary = load(pg, tmp_path, [record, flat], pg.sink(columns={
        "id": "id", "ms": "latency.ms", "doc": {"value": "record"}, "rest": {"value": "rest"}}))
    assert summary.status == "succeeded", summary.error
    assert pg.sql("SELECT id, ms, doc, rest FROM events ORDER BY id") == [
        ("a", 12, record, {"latency": {"unit": "ms"}, "app": "web"}),
        ("b", 7, flat, {"app": "api"}),
    ]


def test_a_missing_field_takes_the_column_default_and_a_null_stays_null(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE events (id integer, level text DEFAULT 'info', loaded_at timestamptz DEFAULT now())")
    summary = load(pg, tmp_path, [{"id": 1}, {"id": 2, "level": None}, {"id": 3, "level": "warn"}], pg.sink())
    assert summary.status == "succeeded", summary.error
    rows = pg.sql("SELECT id, level, loaded_at IS NOT NULL FROM events ORDER BY id")
    assert rows == [(1, "info", True), (2, None, True), (3, "warn", True)]


def test_columns_auto_leaves_identity_and_generated_columns_to_the_server(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, n integer, "
           "twice integer GENERATED ALWAYS AS (n * 2) STORED)")
    summary = load(pg, tmp_path, [{"n": 1}, {"n": 2}], pg.sink())
    assert summary.status == "succeeded", summary.error
    assert pg.sql("SELECT id, n, twice FROM events ORDER BY id") == [(1, 1, 2), (2, 2, 4)]


def test_arrays_bytea_and_json_values_keep_their_shape(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE events (id integer, tags text[], grid integer[], blob bytea, note text, j json)")
    record = {"id": 1, "tags": ["a b", "c\"d", None], "grid": [[1, 2], [3, 4]], "blob": "AAH/", "note": ["x", 1],
              "j": "just text"}
    summary = load(pg, tmp_path, [record, {"id": 2, "blob": "not base64!"}], pg.sink())
    assert summary.written == 1 and summary.dead_lettered_total == 1
    row = pg.sql("SELECT tags, grid, blob, note, j FROM events")[0]
    assert row == (["a b", "c\"d", None], [[1, 2], [3, 4]], b"\x00\x01\xff", '["x",1]', "just text")
    [dead] = dead_letters(tmp_path)
    assert dead["context"]["column"] == "blob" and "base64" in dead["reason"]


def test_upsert_updates_existing_rows_and_the_last_record_of_a_key_wins(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE users (id text PRIMARY KEY, name text, visits integer)")
    pg.sql("INSERT INTO users VALUES ('a', 'old', 1), ('z', 'untouched', 9)")
    records = [{"id": "a", "name": "new", "visits": 2}, {"id": "b", "name": "first", "visits": 1},
               {"id": "b", "name": "second", "visits": 5}]
    summary = load(pg, tmp_path, records, pg.sink("users", mode="upsert", key="id"))
    assert summary.status == "succeeded" and summary.written == 3
    assert pg.sql("SELECT * FROM users ORDER BY id") == [("a", "new", 2), ("b", "second", 5), ("z", "untouched", 9)]


def test_upsert_update_columns_choose_what_an_existing_row_takes(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE users (id text PRIMARY KEY, name text, visits integer)")
    pg.sql("INSERT INTO users VALUES ('a', 'old', 1)")
    records = [{"id": "a", "name": "new", "visits": 2}, {"id": "b", "name": "b", "visits": 1}]
    load(pg, tmp_path, records, pg.sink("users", mode="upsert", key="id", update_columns=["visits"]), name="some")
    assert pg.sql("SELECT * FROM users ORDER BY id") == [("a", "old", 2), ("b", "b", 1)]
    pg.sql("INSERT INTO users VALUES ('c', 'kept', 0)")
    load(pg, tmp_path, [{"id": "c", "name": "x", "visits": 7}, {"id": "d", "name": "d", "visits": 1}],
         pg.sink("users", mode="upsert", key="id", update_columns=[]), name="none")
    assert pg.sql("SELECT * FROM users WHERE id IN ('c', 'd') ORDER BY id") == [("c", "kept", 0), ("d", "d", 1)]


def interval_table(pg: Db) -> None:
    pg.sql("CREATE TABLE facts (id integer PRIMARY KEY, at timestamptz NOT NULL, v integer)")
    pg.sql("INSERT INTO facts VALUES (1, '2023-12-31 23:00Z', 10), (2, '2024-01-01 05:00Z', 20), "
           "(3, '2024-01-01 23:59Z', 30), (4, '2024-01-02 00:00Z', 40)")


def test_replace_interval_replaces_the_runs_interval_and_keeps_every_other_row(pg: Db, tmp_path: Path) -> None:
    interval_table(pg)
    records = [{"id": 10 + i, "at": f"2024-01-01T{i:02d}:30:00Z", "v": i} for i in range(5)]
    block = pg.sink("facts", mode="replace_interval", time_column="at")
    assert load(pg, tmp_path, records, block, files=2).status == "succeeded"
    expected = [(1, 10), (4, 40), *[(10 + i, i) for i in range(5)]]
    assert pg.sql("SELECT id, v FROM facts ORDER BY id") == expected
    assert load(pg, tmp_path, records, block, name="again", files=3).status == "succeeded"  # re-run: same rows
    assert pg.sql("SELECT id, v FROM facts ORDER BY id") == expected


def test_replace_interval_dead_letters_rows_outside_the_interval(pg: Db, tmp_path: Path) -> None:
    interval_table(pg)
    records = [{"id": 10, "at": "2024-01-01T10:00:00Z", "v": 1}, {"id": 11, "at": "2024-01-02T10:00:00Z", "v": 2},
               {"id": 12, "at": None, "v": 3}]
    summary = load(pg, tmp_path, records, pg.sink("facts", mode="replace_interval", time_column="at"),
                   runtime={"error_rate_threshold": 1})
    assert summary.written == 1 and summary.dead_lettered_total == 2
    reasons = sorted(d["reason"] for d in dead_letters(tmp_path))
    assert "outside the run's interval" in reasons[0] and all(d["context"]["column"] == "at"
                                                               for d in dead_letters(tmp_path))
    # a NULL time violates NOT NULL first: the refusal names the column either way
    assert pg.sql("SELECT id FROM facts ORDER BY id") == [(1,), (4,), (10,)]


def test_replace_interval_dead_letters_a_key_a_row_outside_the_interval_holds(pg: Db, tmp_path: Path) -> None:
    interval_table(pg)
    records = [{"id": 2, "at": "2024-01-01T06:00:00Z", "v": 21}, {"id": 4, "at": "2024-01-01T07:00:00Z", "v": 41}]
    summary = load(pg, tmp_path, records, pg.sink("facts", mode="replace_interval", time_column="at"),
                   runtime={"error_rate_threshold": 1})
    assert summary.written == 1  # id 2 was inside the interval (replaced); id 4 lives on 2024-01-02
    [dead] = dead_letters(tmp_path)
    assert dead["record"]["id"] == 4 and dead["context"]["sqlstate"] == "23505"
    assert dead["context"]["constraint"] == "facts_pkey"
    assert pg.sql("SELECT id, v FROM facts ORDER BY id") == [(1, 10), (2, 21), (4, 40)]


def test_a_failed_replace_interval_run_leaves_the_table_as_it_was(pg: Db, tmp_path: Path) -> None:
    interval_table(pg)
    before = pg.sql("SELECT * FROM facts ORDER BY id")
    records = [{"id": 10 + i, "at": "2024-01-01T10:00:00Z", "v": "not a number" if i % 2 else i} for i in range(6)]
    summary = load(pg, tmp_path, records, pg.sink("facts", mode="replace_interval", time_column="at"))
    assert summary.status == "failed" and "error rate" in summary.error
    assert pg.sql("SELECT * FROM facts ORDER BY id") == before


def test_create_table_creates_the_table_and_the_keys_unique_index(pg: Db, tmp_path: Path) -> None:
    block = pg.sink("made", mode="upsert", key=["id"], create_table=True, columns={
        "id": {"type": "bigint", "nullable": False}, "name": {"type": "text"}, "doc": {"value": "record"}})
    summary = load(pg, tmp_path, [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], block)
    assert summary.status == "succeeded", summary.error
    assert pg.sql("SELECT id, name, doc FROM made") == [(1, "b", {"id": 1, "name": "b"})]
    columns = pg.sql("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                     "WHERE table_schema = current_schema() AND table_name = 'made' ORDER BY ordinal_position")
    assert columns == [("id", "bigint", "NO"), ("name", "text", "YES"), ("doc", "jsonb", "YES")]
    assert pg.sql("SELECT indexdef LIKE '%UNIQUE%(id)%' FROM pg_indexes WHERE tablename = 'made'") == [(True,)]


@pytest.mark.parametrize(("ddl", "block", "message"), [
    (None, {}, "table 'SCHEMA.events' does not exist"),
    ("CREATE TABLE events (id integer)", {"columns": {"id": "id", "nme": "name"}}, "column 'nme' does not exist"),
    ("CREATE TABLE events (id integer, must text NOT NULL)", {"columns": {"id": "id"}},
     "column 'must' of SCHEMA.events is NOT NULL without a default"),
    ("CREATE TABLE events (id integer)", {"columns": {"id": {"type": "text"}}},
     "column 'id' is integer in SCHEMA.events, but the job declares text"),
    ("CREATE TABLE events (id integer, v integer)", {"mode": "upsert", "key": ["id"]},
     "needs a primary key or unique index"),
    ("CREATE TABLE events (id integer, at text)", {"mode": "replace_interval", "time_column": "at"},
     "time_column 'at' is text"),
], ids=["no-table", "no-column", "not-null-unmapped", "declared-type", "upsert-without-unique", "time-column-type"])
def test_a_table_that_does_not_fit_fails_before_any_data_moves(pg: Db, tmp_path: Path, ddl: str | None,
                                                               block: dict[str, Any], message: str) -> None:
    if ddl:
        pg.sql(ddl)
    summary = load(pg, tmp_path, [{"id": 1, "name": "a", "v": 1, "at": "x"}], pg.sink(**block))
    assert summary.status == "failed" and summary.read == 0
    assert message.replace("SCHEMA", pg.schema) in summary.error
    assert pg.sql("SELECT to_regclass('sluice_checkpoints')") == [(None,)]  # nothing was prepared


def test_the_checkpoint_table_can_live_in_its_own_schema(pg: Db, tmp_path: Path) -> None:
    pg.sql("CREATE TABLE events (id integer)")
    other = f"{pg.schema}_ops"
    try:
        summary = load(pg, tmp_path, [{"id": 1}], pg.sink(checkpoint_schema=other))
        assert summary.status == "succeeded"
        assert pg.sql(f"SELECT partition, seq FROM {other}.sluice_checkpoints") == [("part-0.jsonl", 0)]
    finally:
        pg.sql(f"DROP SCHEMA IF EXISTS {other} CASCADE")
