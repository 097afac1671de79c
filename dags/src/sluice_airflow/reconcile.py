"""Counting across stages: the compact counts a stage hands on in XCom, and the check that they add up.

Every stage is a Sluice run of its own, so each stage must balance by itself (``read + created ==
written + filtered + dead letters``) and hand on exactly what the next stage reads. Together:
records read from the source = written to the destination + filtered + dead-lettered (- created).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sluice.metrics import RunSummary

COUNT_KEYS = ("read", "written", "created", "filtered_total", "dead_lettered_total", "retries", "partitions")


def stage_counts(summary: RunSummary) -> dict[str, Any]:
    """The small, JSON-safe part of a stage's summary that travels in XCom."""
    data = summary.to_dict()
    out = {k: data[k] for k in COUNT_KEYS}
    out["filtered"] = dict(summary.filtered)
    out["dead_lettered"] = dict(summary.dead_lettered)
    out["duration_s"] = data["duration_s"]
    return out


def add_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several stage counts (the mapped tasks of one stage)."""
    total: dict[str, Any] = dict.fromkeys(COUNT_KEYS, 0)
    filtered: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    for part in parts:
        for key in COUNT_KEYS:
            total[key] += int(part.get(key) or 0)
        filtered.update(part.get("filtered") or {})
        dead.update(part.get("dead_lettered") or {})
    total["filtered"], total["dead_lettered"] = dict(filtered), dict(dead)
    return total


@dataclass
class Reconciliation:
    """The run's totals over all stages and every count that does not add up."""

    read: int
    written: int
    created: int
    filtered: int
    dead_lettered: int
    problems: list[str] = field(default_factory=list)
    dead_by_stage: dict[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.dead_lettered / self.read if self.read else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "written": self.written, "created": self.created, "filtered": self.filtered,
                "dead_lettered": self.dead_lettered, "dead_lettered_by_stage": self.dead_by_stage,
                "error_rate": round(self.error_rate, 6), "reconciled": not self.problems}


def _balance(name: str, c: dict[str, Any], problems: list[str]) -> None:
    left = c["read"] + c["created"]
    right = c["written"] + c["filtered_total"] + c["dead_lettered_total"]
    if left != right:
        problems.append(f"{name}: read {c['read']} + created {c['created']} != written {c['written']} + filtered "
                        f"{c['filtered_total']} + dead letters {c['dead_lettered_total']} ({left - right:+d})")


def reconcile(extract: dict[str, Any], transform: dict[str, Any] | None, load: dict[str, Any]) -> Reconciliation:
    """Check each stage balances and hands on what the next one read; ``transform`` is None when
    the job has no transform steps (load then reads the extract staging directly)."""
    problems: list[str] = []
    stages = [("extract", extract), *([("transform", transform)] if transform is not None else []), ("load", load)]
    for name, counts in stages:
        _balance(name, counts, problems)
    for (up_name, up), (down_name, down) in pairwise(stages):
        if up["written"] != down["read"]:
            problems.append(f"{down_name} read {down['read']} records but {up_name} staged {up['written']}")
    dead = {name: c["dead_lettered_total"] for name, c in stages}
    t = transform or {"created": 0, "filtered_total": 0}
    return Reconciliation(read=extract["read"], written=load["written"], created=t["created"],
                          filtered=t["filtered_total"], dead_lettered=sum(dead.values()), problems=problems,
                          dead_by_stage=dead)
