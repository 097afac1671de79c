"""``sort``: order the records of each batch by one or more fields."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice import Batch, ComponentConfig, RunContext, Transform

from .paths import MISSING, getter, split_path


class SortKey(BaseModel):
    """One sort field and its direction."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="Field path.")
    order: Literal["asc", "desc"] = Field("asc", description="asc or desc.")


class SortConfig(ComponentConfig):
    """Sort keys, most significant first."""

    keys: list[SortKey | str] = Field(min_length=1, description="Field paths (ascending) or {field, order} "
                                                                "objects; a leading '-' on a path sorts descending.")

    @field_validator("keys")
    @classmethod
    def _normalise(cls, value: list[SortKey | str]) -> list[SortKey | str]:
        out: list[SortKey | str] = []
        for key in value:
            if isinstance(key, str):
                key = SortKey(field=key[1:], order="desc") if key.startswith("-") else SortKey(field=key)
            split_path(key.field)
            out.append(key)
        return out


def _rank(value: Any) -> tuple[int, Any]:
    """Values of different types compare by type first (numbers < text < other), never raising."""
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


class Sort(Transform):
    """Sorts each batch by ``keys`` (stable); records missing a key, or null, come last in either order.

    The order holds within a batch only: batches of a partition are written in sequence, so sorting
    a whole partition needs a batch as large as the partition.
    """

    type = "sort"
    Config = SortConfig
    config: SortConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._keys = [(getter(k.field), k.order == "desc") for k in self.config.keys if isinstance(k, SortKey)]

    def apply(self, batch: Batch) -> Batch:
        records = batch.records
        # one stable pass per key, least significant first; the present/missing flag keeps nulls last
        for get, desc in reversed(self._keys):
            if desc:
                records.sort(key=lambda r, get=get: _desc_key(get(r)), reverse=True)
            else:
                records.sort(key=lambda r, get=get: _asc_key(get(r)))
        return batch


def _asc_key(value: Any) -> tuple[int, Any]:
    if value is MISSING or value is None:
        return (1, (0, 0))
    return (0, _rank(value))


def _desc_key(value: Any) -> tuple[int, Any]:
    if value is MISSING or value is None:
        return (0, (0, 0))
    return (1, _rank(value))
