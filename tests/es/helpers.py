"""Helpers of the Elasticsearch/OpenSearch plugin tests: sample documents, loading and reading back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

FAST_RETRY = {"attempts": 6, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "max_time_s": 30}


def docs(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` small documents with ids ``d-<i>``, spread over three days of January 2024."""
    return [{"_id": f"d-{i}", "n": i, "app": ("web", "api", "db")[i % 3], "msg": f"message {i}",
             "ts": f"2024-01-0{1 + i % 3}T{i % 24:02d}:00:00Z"} for i in range(start, start + n)]


def bulk_load(url: str, index: str, records: list[dict[str, Any]], mappings: dict[str, Any] | None = None) -> None:
    """Index ``records`` (their ``_id`` as the id) with a plain client, then refresh."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    if mappings is not None:
        client.indices.create(index=index, body={"mappings": mappings})
    lines = []
    for r in records:
        body = {k: v for k, v in r.items() if k != "_id"}
        lines += [orjson.dumps({"index": {"_index": index, "_id": r["_id"]}}), orjson.dumps(body)]
    if lines:
        result = client.bulk(body=b"\n".join(lines) + b"\n", params={"refresh": "true"})
        assert not result["errors"]
    client.close()


def write_input(records: list[dict[str, Any]], path: str = "in.jsonl") -> str:
    """Write ``records`` as a JSON Lines file (the input of a loading job) and return its path."""
    Path(path).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def fetch_all(url: str, index: str) -> dict[str, dict[str, Any]]:
    """Every document of ``index`` by id (refreshes first)."""
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=[url])
    client.indices.refresh(index=index)
    out: dict[str, dict[str, Any]] = {}
    page = client.search(index=index, body={"size": 1000, "sort": ["_doc"]}, params={"scroll": "1m"})
    while page["hits"]["hits"]:
        out.update({h["_id"]: h["_source"] for h in page["hits"]["hits"]})
        page = client.scroll(body={"scroll_id": page["_scroll_id"], "scroll": "1m"})
    client.clear_scroll(body={"scroll_id": [page["_scroll_id"]]})
    client.close()
    return out
