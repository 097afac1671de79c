"""``aggregate``: group records and emit one record per group at the end of a partition or the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sluice import Batch, ComponentConfig, Record, RunContext, Transform

from .keys import key_function, values_of
from .paths import MISSING, getter, set_path, split_path
from .scoped import ScopedState

Op = Literal["count", "sum", "min", "max", "avg", "first", "last"]


class Metric(BaseModel):
    """One output field computed over each group."""

    model_config = ConfigDict(extra="forbid")

    op: Op = Field(description="count, sum, min, max, avg, first or last.")
    field: str | None = Field(None, description="Input field path (count without a field counts records; with one, "
                                                "records where it is not null).")

    @model_validator(mode="after")
    def _needs_field(self) -> Metric:
        if self.op != "count" and not self.field:
            raise ValueError(f"op {self.op!r} needs a 'field'")
        if self.field:
            split_path(self.field)
        return self


class AggregateConfig(ComponentConfig):
    """How to group and what to compute per group."""

    group_by: list[str] = Field(default_factory=list, description="Field paths of the group key (empty: one group).")
    metrics: dict[str, Metric] = Field(min_length=1, description="Output field → {op, field}.")
    emit: Literal["partition", "run"] = Field("run", description="Emit the groups when each partition ends (groups "
                                                                 "per partition) or once at the end of the run.")


Update = Callable[[list[Any], int, Any], None]  # (group state, slot, value)


def _sum(state: list[Any], i: int, value: Any) -> None:
    state[i] = value if state[i] is None else state[i] + value


def _min(state: list[Any], i: int, value: Any) -> None:
    if state[i] is None or value < state[i]:
        state[i] = value


def _max(state: list[Any], i: int, value: Any) -> None:
    if state[i] is None or value > state[i]:
        state[i] = value


def _first(state: list[Any], i: int, value: Any) -> None:
    if state[i] is None:
        state[i] = value


def _last(state: list[Any], i: int, value: Any) -> None:
    state[i] = value


def _count(state: list[Any], i: int, value: Any) -> None:
    state[i] = (state[i] or 0) + 1


def _avg(state: list[Any], i: int, value: Any) -> None:
    acc = state[i]
    if acc is None:
        state[i] = [value, 1]
    else:
        acc[0] += value
        acc[1] += 1


UPDATES: dict[str, Update] = {"count": _count, "sum": _sum, "min": _min, "max": _max, "avg": _avg,
                              "first": _first, "last": _last}
NUMERIC = frozenset({"sum", "avg"})
ORDERED = frozenset({"sum", "avg", "min", "max"})


def _comparable(a: Any, b: Any) -> bool:
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, number) and isinstance(b, number)) or (isinstance(a, str) and isinstance(b, str))


def _incomparable(metrics: list[Any], state: list[Any], values: list[Any]) -> str | None:
    """Why ``values`` cannot join the group's min/max (text against numbers), or None."""
    for i, (name, _, op, _, _) in enumerate(metrics):
        value, current = values[i], state[i]
        if op in ("min", "max") and current is not None and value is not MISSING and value is not None \
                and not _comparable(value, current):
            return (f"aggregate: metric {name!r} ({op}) cannot compare {type(value).__name__} {value!r:.40} "
                    f"with {type(current).__name__} values")
    return None


class _Groups:
    """Group key → [group values, metric states...], in first-seen order."""

    def __init__(self) -> None:
        self.groups: dict[bytes, tuple[list[Any], list[Any]]] = {}


class Aggregate(Transform):
    """Groups records by ``group_by`` and computes ``metrics``; the input records are consumed (counted
    as filtered by this step) and one record per group comes out when the partition or the run ends.

    A record whose value cannot be aggregated (text in a ``sum``) is dead-lettered and not counted.
    """

    type = "aggregate"
    Config = AggregateConfig
    config: AggregateConfig
    stateless = False

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._key = key_function(self.config.group_by)
        self._values = values_of(self.config.group_by)
        self._group_parts = [split_path(f) for f in self.config.group_by]
        self._metrics = [(name, split_path(name), m.op, getter(m.field) if m.field else None, UPDATES[m.op])
                         for name, m in self.config.metrics.items()]
        self._state: ScopedState[_Groups] = ScopedState(self.config.emit, _Groups)

    def state_scope(self) -> Literal["partition", "run"]:
        return self.config.emit

    def _check(self, record: Record) -> str | None:
        """Why ``record`` cannot be aggregated, or None."""
        for name, _, op, get, _ in self._metrics:
            if get is None or op not in ORDERED:
                continue
            value = get(record)
            if value is MISSING or value is None:
                continue
            if op in NUMERIC and (isinstance(value, bool) or not isinstance(value, int | float)):
                return f"aggregate: metric {name!r} ({op}) needs a number, got {type(value).__name__} {value!r:.40}"
            if not isinstance(value, int | float | str):
                return f"aggregate: metric {name!r} ({op}) needs a number or text, got {type(value).__name__}"
        return None

    def apply(self, batch: Batch) -> Batch:
        groups = self._state.get(batch.partition).groups
        key_of, values_of_ = self._key, self._values
        metrics = self._metrics
        n = len(metrics)
        good: list[Record] = []
        for record in batch.records:
            reason = self._check(record)
            if reason is None:
                good.append(record)
            else:
                batch.reject(record, reason, "AggregateTypeError")
        keys = [key_of(r) for r in good]
        with self._state.guard():
            for record, key in zip(good, keys, strict=True):
                group = groups.get(key)
                state = group[1] if group is not None else [None] * n
                values = [MISSING if get is None else get(record) for _, _, _, get, _ in metrics]
                reason = _incomparable(metrics, state, values)
                if reason is not None:
                    batch.reject(record, reason, "AggregateTypeError")
                    continue
                if group is None:
                    groups[key] = (values_of_(record), state)
                for i in range(n):
                    value = values[i]
                    if metrics[i][3] is None:
                        metrics[i][4](state, i, None)
                    elif value is not MISSING and value is not None:
                        metrics[i][4](state, i, value)
        batch.records = []
        return batch

    def flush(self, partition: str | None) -> list[Record]:
        table = self._state.take(partition)
        if table is None:
            return []
        groups = table.groups
        out: list[Record] = []
        for values, state in groups.values():
            record: Record = {}
            for parts, value in zip(self._group_parts, values, strict=True):
                set_path(record, parts, value)
            for i, (_, parts, op, _, _) in enumerate(self._metrics):
                result = state[i]
                if op == "avg":
                    result = result[0] / result[1] if result else None
                elif op == "count" and result is None:
                    result = 0
                set_path(record, parts, result)
            out.append(record)
        return out
