"""Helpers for the PostgreSQL tests: a schema-scoped handle, job blocks, test certificates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

PASSWORD = "s3cr3t-Pa55word"  # role sluice_pw's; the tests check it is never printed
FAST_RETRY = {"attempts": 3, "initial_backoff_s": 0.05, "max_backoff_s": 0.1, "max_time_s": 10}
FAST_RUNTIME = {"batch_size": 10, "max_workers": 2, "retry": FAST_RETRY}


@dataclass
class Db:
    """A test's schema on the session server."""

    uri: str
    schema: str
    server: Any

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ``query`` (autocommit); the rows it returns, if any."""
        import psycopg

        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(f"SET search_path = {self.schema}, public")
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def t(self, name: str) -> str:
        """``schema.name``."""
        return f"{self.schema}.{name}"

    def sink(self, table: str = "events", **extra: Any) -> dict[str, Any]:
        return {"type": "postgres", "dsn": self.uri, "table": self.t(table), **extra}

    def source(self, **extra: Any) -> dict[str, Any]:
        return {"type": "postgres", "dsn": self.uri, **extra}

    def ledger(self) -> list[tuple[Any, ...]]:
        return self.sql("SELECT partition, seq, written FROM sluice_checkpoints ORDER BY partition, seq")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def job(name: str, source: dict[str, Any], destination: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"job_name": name, "runtime": {**FAST_RUNTIME, **extra.pop("runtime", {})}, "source": source,
            "destination": destination, **extra}
