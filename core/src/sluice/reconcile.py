"""Counting across the steps of a staged run: the compact counts a step hands on, and the check
that they add up.

Every step is a Sluice run of its own, so each must balance by itself (``read + created ==
written + filtered + dead letters``) and hand on exactly what the next step reads. Together they
make one ``RunSummary``, judged like a plain run's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

from .metrics import RunSummary

COUNT_KEYS = ("read", "written", "created", "retries")


def step_counts(summary: RunSummary) -> dict[str, Any]:
    """The small, JSON-safe counts of one step's summary (they travel in manifests and XCom)."""
    return {"read": summary.read, "written": summary.written, "created": summary.created,
            "retries": summary.retries, "filtered": dict(summary.filtered),
            "dead_lettered": dict(summary.dead_lettered), "duration_s": round(summary.duration_s, 3)}


def add_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several steps' counts (the mapped tasks of one stage)."""
    total: dict[str, Any] = dict.fromkeys(COUNT_KEYS, 0)
    filtered: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    duration = 0.0
    for part in parts:
        for key in COUNT_KEYS:
            total[key] += int(part.get(key) or 0)
        filtered.update(part.get("filtered") or {})
        dead.update(part.get("dead_lettered") or {})
        duration += float(part.get("duration_s") or 0)
    total.update(filtered=dict(filtered), dead_lettered=dict(dead), duration_s=round(duration, 3))
    return total


def _balance(name: str, c: dict[str, Any]) -> str | None:
    filtered, dead = sum(c["filtered"].values()), sum(c["dead_lettered"].values())
    left, right = c["read"] + c["created"], c["written"] + filtered + dead
    if left == right:
        return None
    return (f"{name}: read {c['read']} + created {c['created']} != written {c['written']} + filtered {filtered} + "
            f"dead letters {dead} ({left - right:+d})")


def reconcile(stages: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every problem with the stages' counts (in order): a stage that does not balance, or a
    stage that did not read exactly what the one before handed on."""
    problems = [p for name, counts in stages if (p := _balance(name, counts))]
    for (up_name, up), (down_name, down) in pairwise(stages):
        if up["written"] != down["read"]:
            problems.append(f"{down_name} read {down['read']} records but {up_name} staged {up['written']}")
    return problems


def run_summary(job: str, run_id: str, stages: list[tuple[str, dict[str, Any]]], threshold: float) -> RunSummary:
    """The whole run's summary from its stages' counts: read by the first, written by the last,
    filtered, created and dead-lettered by any. Not judged yet (see ``RunSummary.judge``)."""
    filtered: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    for _, counts in stages:
        filtered.update(counts["filtered"])
        dead.update(counts["dead_lettered"])
    return RunSummary(
        job=job, run_id=run_id, status="succeeded", read=stages[0][1]["read"], written=stages[-1][1]["written"],
        created=sum(c["created"] for _, c in stages), filtered=dict(filtered), dead_lettered=dict(dead),
        retries=sum(c["retries"] for _, c in stages), duration_s=sum(c["duration_s"] for _, c in stages),
        error_rate_threshold=threshold,
    )
