"""The conformance suites every Sluice component passes, run against the real server: the sink in
each mode (two-phase, several processes, a fresh committer), the source by table and by query."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sluice.testing.conformance import SinkContract, SourceContract

from .helpers import Db

CONTRACT_COLUMNS = "_id text PRIMARY KEY, n integer NOT NULL, name text, tags jsonb"


def contract_rows(pg: Db, table: str = "events") -> Callable[[], list[dict[str, Any]]]:
    def read_back() -> list[dict[str, Any]]:
        rows = pg.sql(f"SELECT _id, n, name, tags FROM {table} ORDER BY n, _id")
        return [{"_id": r[0], "n": r[1], "name": r[2], "tags": r[3]} for r in rows]

    return read_back


class TestAppendSinkContract(SinkContract):
    """append has no key: it cannot tell which partition wrote a row, so it never prunes."""

    prunes_partitions = False

    @pytest.fixture
    def sink_block(self, pg: Db) -> dict[str, Any]:
        pg.sql("CREATE TABLE events (_id text, n integer NOT NULL, name text, tags jsonb)")
        return pg.sink()

    @pytest.fixture
    def read_back(self, pg: Db) -> Callable[[], list[dict[str, Any]]]:
        return contract_rows(pg)


class TestUpsertSinkContract(SinkContract):
    """upsert overwrites by key (the table is made by create_table); a key cannot say which partition wrote it."""

    prunes_partitions = False

    @pytest.fixture
    def sink_block(self, pg: Db) -> dict[str, Any]:
        return pg.sink(mode="upsert", key=["_id"], create_table=True, columns={
            "_id": {"type": "text", "nullable": False}, "n": {"type": "integer"}, "name": {"type": "text"},
            "tags": {"type": "jsonb"}})

    @pytest.fixture
    def read_back(self, pg: Db) -> Callable[[], list[dict[str, Any]]]:
        return contract_rows(pg)


class TestReplaceIntervalSinkContract(SinkContract):
    """replace_interval stages rows per partition and swaps the interval at commit (``day`` comes
    from its default, inside the contract's interval)."""

    @pytest.fixture
    def sink_block(self, pg: Db) -> dict[str, Any]:
        pg.sql(f"CREATE TABLE events ({CONTRACT_COLUMNS}, day date NOT NULL DEFAULT '2024-01-01')")
        return pg.sink(mode="replace_interval", time_column="day")

    @pytest.fixture
    def read_back(self, pg: Db) -> Callable[[], list[dict[str, Any]]]:
        return contract_rows(pg)


@pytest.fixture
def people(pg: Db) -> int:
    pg.sql("CREATE TABLE people (id bigint PRIMARY KEY, name text, score numeric(6,2), seen timestamptz)")
    pg.sql("INSERT INTO people SELECT i, 'p' || i, i / 7.0, timestamptz '2024-01-01' + i * interval '1 minute' "
           "FROM generate_series(1, 60) i")
    pg.sql("INSERT INTO people VALUES (61, NULL, NULL, NULL)")
    return 61


class TestTableSourceContract(SourceContract):
    @pytest.fixture
    def source_block(self, pg: Db, people: int) -> dict[str, Any]:
        return pg.source(table=pg.t("people"), partition_by="id", partitions=3)

    @pytest.fixture
    def expected_records(self, people: int) -> int:
        return people


class TestTimeRangeSourceContract(SourceContract):
    """Ranges of a timestamp column (NULLs in the last range), pages by the primary key."""

    @pytest.fixture
    def source_block(self, pg: Db, people: int) -> dict[str, Any]:
        return pg.source(table=pg.t("people"), partition_by="seen", partitions=4)

    @pytest.fixture
    def expected_records(self, people: int) -> int:
        return people


class TestQuerySourceContract(SourceContract):
    @pytest.fixture
    def source_block(self, pg: Db, people: int) -> dict[str, Any]:
        return pg.source(query=f"SELECT id, name, score FROM {pg.t('people')} WHERE id > 10", key=["id"],
                         partition_by="name", partitions=2)

    @pytest.fixture
    def expected_records(self, people: int) -> int:
        return people - 10


class TestQueryWithoutKeySourceContract(SourceContract):
    """No key: resume by row count, exact because the query orders its rows."""

    @pytest.fixture
    def source_block(self, pg: Db, people: int) -> dict[str, Any]:
        return pg.source(query=f"SELECT id, name FROM {pg.t('people')} ORDER BY id")

    @pytest.fixture
    def expected_records(self, people: int) -> int:
        return people
