"""User code for the ``python`` transform tests (importable as ``transforms.userfuncs``)."""

from __future__ import annotations

from typing import Any

from sluice import Reject


def tag(record: dict[str, Any], label: str = "seen") -> dict[str, Any] | None:
    """Record mode: drop DEBUG, reject records without an app, tag the rest."""
    if record.get("level") == "DEBUG":
        return None
    if not record.get("app"):
        raise Reject("no app")
    record["label"] = label
    return record


def explode(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch mode: every record twice."""
    return [dict(r, copy=i) for r in records for i in range(2)]


def broken(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch mode that fails."""
    raise RuntimeError("boom")


NOT_CALLABLE = 42


def stamp_pid(record: dict[str, Any]) -> dict[str, Any]:
    """Record mode: note which process ran the step."""
    import os

    record["pid"] = os.getpid()
    return record
