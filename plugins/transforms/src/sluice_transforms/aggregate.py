"""``aggregate``: group records and emit one record per group at the end of a partition or the run.

Partitions update a run-wide table in whatever order their threads get there, so nothing the
result depends on may follow that order: ``first``/``last`` and the order of the groups follow the
stated order of ``scoped.RecordOrder`` (``order_by``, then partition key and position), and sums are
exact (floats added as exact rationals, rounded once at the end), so a re-run with any number of
workers writes the same groups, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sluice import Batch, ComponentConfig, Record, RunContext, Transform

from .keys import key_function, values_of
from .paths import MISSING, getter, set_path, split_path
from .scoped import RecordOrder, ScopedState

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
    order_by: str | None = Field(
        None, description="Field path ordering the records for first/last and the groups (missing and null last; "
                          "ties by partition key, then position). Default: partition key, then position.")

    @model_validator(mode="after")
    def _order_path(self) -> AggregateConfig:
        if self.order_by:
            split_path(self.order_by)
        return self


Update = Callable[[list[Any], int, Any, tuple[Any, ...]], None]  # (group state, slot, value, record's order)

FLOAT_SCALE = 1074  # every finite float is an integer times 2**-1074


class ExactSum:
    """A sum (and count) that does not depend on the order values are added in: integers add
    exactly, finite floats are added as exact integers scaled by 2**1074, and the float result is
    rounded once (int / int true division rounds correctly). inf and nan add up as IEEE says,
    which is order-independent too."""

    __slots__ = ("count", "floats", "ints", "scaled", "special")

    def __init__(self) -> None:
        self.ints = self.scaled = self.count = 0
        self.floats = False
        self.special: float | None = None

    def add(self, value: int | float) -> None:
        self.count += 1
        if type(value) is int:
            self.ints += value
        elif math.isfinite(value):
            numerator, denominator = float(value).as_integer_ratio()
            self.scaled += numerator << (FLOAT_SCALE - denominator.bit_length() + 1)
            self.floats = True
        else:
            self.special = value if self.special is None else self.special + value

    def total(self) -> int | float:
        if self.special is not None:
            return self.special
        if not self.floats:
            return self.ints
        return ((self.ints << FLOAT_SCALE) + self.scaled) / (1 << FLOAT_SCALE)

    def mean(self) -> float | None:
        if not self.count:
            return None
        if self.special is not None:
            return self.special
        if not self.floats:
            return self.ints / self.count
        return ((self.ints << FLOAT_SCALE) + self.scaled) / (self.count << FLOAT_SCALE)


def _sum(state: list[Any], i: int, value: Any, order: tuple[Any, ...]) -> None:
    acc = state[i]
    if acc is None:
        acc = state[i] = ExactSum()
    acc.add(value)


def _min(state: list[Any], i: int, value: Any, order: tuple[Any, ...]) -> None:
    if state[i] is None or value < state[i]:
        state[i] = value


def _max(state: list[Any], i: int, value: Any, order: tuple[Any, ...]) -> None:
    if state[i] is None or value > state[i]:
        state[i] = value


def _first(state: list[Any], i: int, value: Any, order: tuple[Any, ...]) -> None:
    if state[i] is None or order < state[i][0]:
        state[i] = (order, value)


def _last(state: list[Any], i: int, value: Any, order: tuple[Any, ...]) -> None:
    if state[i] is None or order > state[i][0]:
        state[i] = (order, value)


def _count(state: list[Any], i: int, value: Any, order: tuple[Any, ...]) -> None:
    state[i] = (state[i] or 0) + 1


UPDATES: dict[str, Update] = {"count": _count, "sum": _sum, "min": _min, "max": _max, "avg": _sum,
                              "first": _first, "last": _last}
NUMERIC = frozenset({"sum", "avg"})
ORDERED = frozenset({"sum", "avg", "min", "max"})


def _result(op: str, state: Any) -> Any:
    """A metric's output from its state."""
    if op == "sum":
        return None if state is None else state.total()
    if op == "avg":
        return None if state is None else state.mean()
    if op in ("first", "last"):
        return None if state is None else state[1]
    if op == "count" and state is None:
        return 0
    return state


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
    """Group key → (group values, metric states, [the order of its first record])."""

    def __init__(self) -> None:
        self.groups: dict[bytes, tuple[list[Any], list[Any], list[Any]]] = {}


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
        # no group_by: one group (key_function([]) would key on the whole record)
        self._key = key_function(self.config.group_by) if self.config.group_by else lambda record: b""
        self._values = values_of(self.config.group_by)
        self._group_parts = [split_path(f) for f in self.config.group_by]
        self._metrics = [(name, split_path(name), m.op, getter(m.field) if m.field else None, UPDATES[m.op])
                         for name, m in self.config.metrics.items()]
        self._order = RecordOrder(self.config.order_by)
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
        key_of, values_of_, order_of = self._key, self._values, self._order.of
        metrics = self._metrics
        n = len(metrics)
        good: list[tuple[Record, tuple[Any, ...]]] = []
        for index, record in enumerate(batch.records):
            reason = self._check(record)
            if reason is None:
                good.append((record, order_of(batch, index, record)))
            else:
                batch.reject(record, reason, "AggregateTypeError")
        keys = [key_of(r) for r, _ in good]
        with self._state.guard():
            for (record, order), key in zip(good, keys, strict=True):
                group = groups.get(key)
                state = group[1] if group is not None else [None] * n
                values = [MISSING if get is None else get(record) for _, _, _, get, _ in metrics]
                reason = _incomparable(metrics, state, values)
                if reason is not None:
                    batch.reject(record, reason, "AggregateTypeError")
                    continue
                if group is None:
                    groups[key] = (values_of_(record), state, [order])
                elif order < group[2][0]:
                    group[2][0] = order
                for i in range(n):
                    value = values[i]
                    if metrics[i][3] is None:
                        metrics[i][4](state, i, None, order)
                    elif value is not MISSING and value is not None:
                        metrics[i][4](state, i, value, order)
        batch.records = []
        return batch

    def flush(self, partition: str | None) -> list[Record]:
        table = self._state.take(partition)
        if table is None:
            return []
        out: list[Record] = []
        # groups in the order of their first record: the same whichever partition reached them first
        for values, state, _ in sorted(table.groups.values(), key=lambda group: group[2][0]):
            record: Record = {}
            for parts, value in zip(self._group_parts, values, strict=True):
                set_path(record, parts, value)
            for i, (_, parts, op, _, _) in enumerate(self._metrics):
                set_path(record, parts, _result(op, state[i]))
            out.append(record)
        return out
