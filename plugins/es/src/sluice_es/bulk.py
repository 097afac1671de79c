"""Bulk request bodies and bulk responses, as pure functions of records (no client, no I/O).

Bodies are built as bytes with orjson in one pass over the batch, cut into chunks by document
count and byte size; responses are read item by item into written / retry / dead letter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice import DeadLetter, Record

META_FIELDS = ("_id", "_index")
_dumps = orjson.dumps


@dataclass(slots=True)
class Action:
    """One record's bulk action: its request lines (bytes) and the record it came from."""

    record: Record
    payload: bytes
    index: str
    id: str | None


@dataclass
class Outcome:
    """A bulk response read item by item."""

    written: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    retry: list[Action] = field(default_factory=list)
    retry_reasons: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0


def hash_id(record: Record, fields: list[str]) -> str:
    """A stable id from the values of ``fields`` (SHA-1 of their canonical JSON)."""
    values = [record.get(f) for f in fields]
    return hashlib.sha1(_dumps(values, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


class ActionBuilder:
    """Turns records into bulk actions following the sink's op type, id, index and routing settings.

    ``index_of`` / ``routing_of`` are per-record callables (compiled templates) or None; records
    that cannot become an action (no id, no index) come back as dead letters.
    """

    def __init__(self, op_type: str, id_field: str, id_fields: list[str] | None,
                 index_of: Callable[[Record], str] | None, routing_of: Callable[[Record], str] | None,
                 retry_on_conflict: int) -> None:
        self.op_type = op_type
        self.id_field = None if id_field == "auto" and not id_fields else id_field
        self.id_fields = id_fields
        self.index_of = index_of
        self.routing_of = routing_of
        self.retry_on_conflict = retry_on_conflict

    def build(self, records: list[Record]) -> tuple[list[Action], list[DeadLetter]]:
        actions: list[Action] = []
        dead: list[DeadLetter] = []
        op, id_field, id_fields = self.op_type, self.id_field, self.id_fields
        index_of, routing_of = self.index_of, self.routing_of
        for record in records:
            doc = record
            if "_id" in record or "_index" in record:  # metadata, never part of the stored document
                doc = {k: v for k, v in record.items() if k not in META_FIELDS}
            try:
                index = index_of(record) if index_of is not None else record.get("_index")
                routing = routing_of(record) if routing_of is not None else None
            except Exception as exc:  # a template that fails on one record dead-letters that record
                dead.append(DeadLetter(record, f"template failed: {exc}", "TemplateError"))
                continue
            if not index:
                dead.append(DeadLetter(record, "no target index: set `index` or give records an `_index`",
                                       "MissingIndex"))
                continue
            meta: dict[str, Any] = {"_index": index}
            doc_id: Any = None
            if id_fields:
                doc_id = hash_id(record, id_fields)
            elif id_field is not None:
                doc_id = record.get(id_field)
                if doc_id is None or doc_id == "":
                    dead.append(DeadLetter(record, f"record has no {id_field!r} for the document id "
                                                   "(set id: auto to let the cluster assign ids)", "MissingId"))
                    continue
                if not isinstance(doc_id, str):
                    doc_id = str(doc_id)
            if doc_id is not None:
                meta["_id"] = doc_id
            if routing:
                meta["routing"] = routing
            if op == "update":
                if self.retry_on_conflict:
                    meta["retry_on_conflict"] = self.retry_on_conflict
                payload = b"".join((_dumps({"update": meta}), b"\n",
                                    _dumps({"doc": doc, "doc_as_upsert": True}, default=str), b"\n"))
            elif op == "delete":
                payload = _dumps({"delete": meta}) + b"\n"
            else:
                payload = b"".join((_dumps({op: meta}), b"\n", _dumps(doc, default=str), b"\n"))
            actions.append(Action(record, payload, index, doc_id))
        return actions, dead


def chunks(actions: list[Action], max_docs: int, max_bytes: int) -> Iterator[list[Action]]:
    """Consecutive groups of at most ``max_docs`` actions and ``max_bytes`` bytes (a bigger action goes alone)."""
    chunk: list[Action] = []
    size = 0
    for action in actions:
        n = len(action.payload)
        if chunk and (len(chunk) >= max_docs or size + n > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(action)
        size += n
    if chunk:
        yield chunk


def read_response(op_type: str, actions: list[Action], response: dict[str, Any]) -> Outcome:
    """Sort each item into written, retry (429/5xx) or dead letter (other 4xx) by its status."""
    out = Outcome()
    items = response.get("items") or []
    if len(items) != len(actions):
        raise ValueError(f"the bulk response has {len(items)} items for {len(actions)} actions")
    if not response.get("errors"):
        out.written = len(actions)
        return out
    written = 0
    for action, item in zip(actions, items, strict=True):
        result = next(iter(item.values()))
        status = int(result.get("status", 0))
        if status < 300:
            written += 1
            continue
        error = result.get("error") or {}
        etype = str(error.get("type") or f"http_{status}") if isinstance(error, dict) else str(error)
        reason = str(error.get("reason") or "") if isinstance(error, dict) else ""
        if status == 409 and op_type == "create":
            written += 1  # the document is there already: idempotent, not an error
            out.conflicts += 1
        elif status == 404 and op_type == "delete":
            written += 1  # already gone
        elif status == 429 or status >= 500:
            out.retry.append(action)
            out.retry_reasons[f"{status} {etype}"] = out.retry_reasons.get(f"{status} {etype}", 0) + 1
        else:
            out.dead.append(DeadLetter(
                record=action.record,
                reason=f"{status} {etype}: {reason}" if reason else f"{status} {etype}",
                error_type=etype,
                context={"status": status, "index": action.index, "id": action.id, "op_type": op_type},
            ))
    out.written = written
    return out
