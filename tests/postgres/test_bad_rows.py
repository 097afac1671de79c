"""Bad rows: a failing COPY is split until the offending rows are alone; they become dead letters
with the SQLSTATE, the constraint and the column, and every other row lands. Nothing is dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .helpers import Db
from .test_sink import dead_letters, load

GOOD = [{"id": i, "n": i, "parent": 1, "code": f"c{i}"} for i in range(1, 20)]


@pytest.fixture
def events(pg: Db) -> None:
    pg.sql("CREATE TABLE parents (id integer PRIMARY KEY)")
    pg.sql("INSERT INTO parents VALUES (1), (2)")
    pg.sql("CREATE TABLE events (id integer PRIMARY KEY, n integer NOT NULL CHECK (n >= 0), "
           "parent integer REFERENCES parents (id), code varchar(4))")


KINDS = [
    # (bad record, SQLSTATE, constraint, column)
    ({"id": 100, "n": "abc", "parent": 1}, "22P02", None, "n"),
    ({"id": 101, "n": None, "parent": 1}, "23502", None, "n"),
    ({"id": 102, "n": -1, "parent": 1}, "23514", "events_n_check", None),
    ({"id": 103, "n": 1, "parent": 99}, "23503", "events_parent_fkey", None),
    ({"id": 5, "n": 1, "parent": 1}, "23505", "events_pkey", None),  # append: a key already in the batch
    ({"id": 104, "n": 1, "parent": 1, "code": "toolong"}, "22001", None, "code"),
]


@pytest.mark.parametrize(("bad", "state", "constraint", "column"), KINDS,
                         ids=["no-conversion", "null-into-not-null", "check", "foreign-key", "duplicate-key",
                              "too-long"])
def test_a_bad_row_becomes_a_dead_letter_and_the_rest_of_its_batch_lands(
        pg: Db, tmp_path: Path, events: None, bad: dict[str, Any], state: str, constraint: str | None,
        column: str | None) -> None:
    records = [*GOOD[:7], bad, *GOOD[7:]]
    summary = load(pg, tmp_path, records, pg.sink(), runtime={"batch_size": 20, "error_rate_threshold": 1})
    assert summary.written == len(GOOD) and summary.dead_lettered_total == 1 and summary.reconciled
    assert pg.sql("SELECT count(*) FROM events") == [(len(GOOD),)]
    [dead] = dead_letters(tmp_path)
    assert dead["record"] == bad and dead["stage"] == "sink" and dead["plugin"] == "postgres"
    assert dead["context"] == {"sqlstate": state, "constraint": constraint, "column": column,
                               "table": f"{pg.schema}.events"}
    assert dead["reason"] and dead["error_type"] != "Error"


def test_several_bad_rows_of_every_kind_in_one_batch_are_isolated(pg: Db, tmp_path: Path, events: None) -> None:
    records = list(GOOD)
    for at, (bad, *_rest) in zip((2, 5, 9, 11, 14, 17), KINDS, strict=True):
        records.insert(at, bad)
    summary = load(pg, tmp_path, records, pg.sink(), runtime={"batch_size": 50, "error_rate_threshold": 1})
    assert summary.written == len(GOOD) and summary.dead_lettered_total == len(KINDS)
    assert sorted(d["context"]["sqlstate"] for d in dead_letters(tmp_path)) == sorted(k[1] for k in KINDS)
    assert sorted(r[0] for r in pg.sql("SELECT id FROM events")) == [r["id"] for r in GOOD]


@pytest.mark.parametrize("mode", ["upsert", "replace_interval"])
def test_bad_rows_are_isolated_in_the_modes_that_load_through_a_temporary_table(
        pg: Db, tmp_path: Path, events: None, mode: str) -> None:
    pg.sql("ALTER TABLE events ADD COLUMN day date NOT NULL DEFAULT '2024-01-01'")
    extra = {"key": ["id"]} if mode == "upsert" else {"time_column": "day"}
    records = [*GOOD[:3], KINDS[0][0], *GOOD[3:9], KINDS[2][0], KINDS[3][0], *GOOD[9:]]
    summary = load(pg, tmp_path, records, pg.sink(mode=mode, **extra),
                   runtime={"batch_size": 50, "error_rate_threshold": 1})
    assert summary.written == len(GOOD) and summary.dead_lettered_total == 3
    assert sorted(d["context"]["sqlstate"] for d in dead_letters(tmp_path)) == ["22P02", "23503", "23514"]
    assert pg.sql("SELECT count(*) FROM events") == [(len(GOOD),)]


def test_a_trigger_that_refuses_a_row_dead_letters_that_row(pg: Db, tmp_path: Path, events: None) -> None:
    pg.sql("CREATE FUNCTION no_sevens() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
           "IF NEW.n = 7 THEN RAISE EXCEPTION 'sevens are not allowed'; END IF; RETURN NEW; END $$")
    pg.sql("CREATE TRIGGER no_sevens BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION no_sevens()")
    summary = load(pg, tmp_path, GOOD, pg.sink(), runtime={"error_rate_threshold": 1})
    assert summary.written == len(GOOD) - 1
    [dead] = dead_letters(tmp_path)
    assert dead["record"]["n"] == 7 and dead["context"]["sqlstate"] == "P0001"
    assert "sevens are not allowed" in dead["reason"]
