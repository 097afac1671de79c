"""The postgres source: lossless types, key ranges read in parallel, keyset resume (also after a
dropped connection), templated queries, and the errors of a source that cannot page."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sluice import Partition
from sluice.testing import build, make_context, read_jsonl, run_job

from .helpers import Db, job


def read_all(block: dict[str, Any], **runtime: Any) -> list[dict[str, Any]]:
    source = build("source", block, make_context(**runtime))
    try:
        return [r for p in source.partitions() for b in source.read(p) for r in b.records]
    finally:
        source.close()


def test_types_map_to_json_without_loss(pg: Db) -> None:
    pg.sql("CREATE TABLE typed (id integer PRIMARY KEY, big bigint, price numeric(30,10), ratio double precision, "
           "nan double precision, ts timestamptz, naive timestamp, day date, t time, span interval, u uuid, "
           "raw bytea, tags text[], nums numeric[], doc jsonb, j json, ok boolean, ip inet, forever timestamptz)")
    pg.sql("INSERT INTO typed VALUES (1, 9007199254740993, 12345678901234567890.0123456789, 0.1, 'NaN', "
           "'2024-01-01 10:00:00.123456+02', '2024-01-01 10:00', '2024-02-29', '23:59:59.5', "
           "'1 year 2 mons 3 days 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x0001ff', "
           "'{a,\"b c\",NULL}', '{1.10,2}', '{\"k\": [1, {\"x\": null}]}', '[1, 2]', true, '10.0.0.1/32', 'infinity')")
    [record] = read_all(pg.source(table=pg.t("typed")))
    assert record == {
        "id": 1, "big": 9007199254740993, "price": "12345678901234567890.0123456789", "ratio": 0.1, "nan": "NaN",
        "ts": "2024-01-01T08:00:00.123456+00:00", "naive": "2024-01-01T10:00:00+00:00", "day": "2024-02-29",
        "t": "23:59:59.5", "span": "P1Y2M3DT4H5M6S", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "raw": "AAH/",
        "tags": ["a", "b c", None], "nums": ["1.10", "2"], "doc": {"k": [1, {"x": None}]}, "j": [1, 2], "ok": True,
        "ip": "10.0.0.1", "forever": "infinity"}
    [number] = read_all(pg.source(table=pg.t("typed"), columns=["id", "price"], numeric="number"))
    assert number == {"id": 1, "price": 12345678901234567890.0123456789}


@pytest.fixture
def events(pg: Db) -> int:
    pg.sql("CREATE TABLE events (id integer PRIMARY KEY, at timestamptz, name text)")
    pg.sql("INSERT INTO events SELECT i, timestamptz '2024-01-01' + i * interval '1 minute', 'e' || i "
           "FROM generate_series(1, 3000) i")
    return 3000


def test_key_ranges_are_read_in_parallel_and_cover_every_row_once(pg: Db, events: int, tmp_path: Path) -> None:
    summary = run_job(job("export", pg.source(table=pg.t("events"), partition_by="id", partitions=4),
                          {"type": "jsonl", "path": str(tmp_path / "out")}, runtime={"batch_size": 500}))
    assert summary.status == "succeeded" and summary.partitions == 4
    rows = read_jsonl(tmp_path / "out")
    assert Counter(r["id"] for r in rows) == Counter(range(1, events + 1))
    parts = {p.name.split("-00000")[0] for p in (tmp_path / "out").glob("part-*")}
    assert parts == {f"part-range-00{i}-of-004" for i in range(1, 5)}


def test_a_templated_query_reads_the_runs_interval(pg: Db, events: int) -> None:
    query = (f"SELECT id, name FROM {pg.t('events')} WHERE at >= '{{{{ data_interval_start }}}}' "
             f"AND at < '{{{{ data_interval_end }}}}'")
    summary = run_job(job("interval", pg.source(query=query, key="id"), {"type": "jsonl", "path": "out"}),
                      ds="2024-01-02")
    assert summary.written == 1440  # the minutes of 2024-01-02


def test_resume_continues_after_the_last_key_written(pg: Db, events: int) -> None:
    """The destination (another table) fails for good half-way; after the fix, --resume reads only the rest."""
    pg.sql("CREATE TABLE copy (id integer, at timestamptz, name text)")
    pg.sql("CREATE SEQUENCE calls")
    pg.sql(f"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF nextval('{pg.schema}.calls') "
           "> 5 THEN RAISE EXCEPTION 'disk quota' USING ERRCODE = '53100'; END IF; RETURN NULL; END $$")
    pg.sql("CREATE TRIGGER refuse AFTER INSERT ON copy FOR EACH STATEMENT EXECUTE FUNCTION refuse()")
    spec = job("copy", pg.source(table=pg.t("events"), partition_by="id", partitions=2), pg.sink("copy"),
               runtime={"batch_size": 200, "retry": {"attempts": 1}})
    first = run_job(spec)
    assert first.status == "failed" and 0 < first.written < events
    pg.sql("DROP TRIGGER refuse ON copy")
    again = run_job(spec, resume=True)
    assert again.status == "succeeded" and again.read < events
    assert Counter(r[0] for r in pg.sql("SELECT id FROM copy")) == Counter(range(1, events + 1))


def test_a_dropped_connection_mid_read_reconnects_and_continues_after_the_last_page(pg: Db, events: int) -> None:
    source = build("source", pg.source(table=pg.t("events")), make_context(batch_size=1000))
    pages = source.read(Partition("all"))
    first = next(pages)
    pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sluice/test' "
           "AND pid <> pg_backend_pid()")
    rest = [r for b in pages for r in b.records]
    source.close()
    assert [r["id"] for r in first.records + rest] == list(range(1, events + 1))
    assert source.ctx.metrics.snapshot()["retries"] == 1


def test_a_resume_into_a_range_that_moved_is_refused(pg: Db, events: int) -> None:
    block = pg.source(table=pg.t("events"), partition_by="id", partitions=2)
    source = build("source", block, make_context(batch_size=100))
    first = source.partitions()[0]
    checkpoint = next(iter(source.read(first))).checkpoint
    pg.sql("INSERT INTO events VALUES (100000, now(), 'late')")  # the max moves, and so do the bounds
    with pytest.raises(Exception, match="rows were added or removed"):
        next(iter(source.read(source.partitions()[0], checkpoint)))
    source.close()


def test_a_table_without_primary_key_needs_a_key(pg: Db) -> None:
    pg.sql("CREATE TABLE loose (a integer)")
    with pytest.raises(Exception, match="has no primary key: set key"):
        build("source", pg.source(table=pg.t("loose")))
    assert read_all(pg.source(table=pg.t("loose"), key="a")) == []


def test_nulls_of_partition_by_belong_to_the_last_range(pg: Db) -> None:
    pg.sql("CREATE TABLE sparse (id integer PRIMARY KEY, grp integer)")
    pg.sql("INSERT INTO sparse SELECT i, CASE WHEN i % 3 = 0 THEN NULL ELSE i END FROM generate_series(1, 30) i")
    source = build("source", pg.source(table=pg.t("sparse"), partition_by="grp", partitions=3))
    per = {p.key: [r["id"] for b in source.read(p) for r in b.records] for p in source.partitions()}
    source.close()
    assert sorted(i for ids in per.values() for i in ids) == list(range(1, 31))
    assert all(i in per["range-003-of-003"] for i in range(3, 31, 3))
