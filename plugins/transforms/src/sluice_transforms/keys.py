"""Record keys for dedup, aggregate and sample: field values turned into compact, hashable bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .paths import MISSING, getter

KeyFn = Callable[[dict[str, Any]], bytes]


def key_function(fields: list[str]) -> KeyFn:
    """``record -> bytes`` of the values at ``fields`` (a missing field and null are the same);
    with no fields, the whole record with sorted keys."""
    dumps = orjson.dumps
    if not fields:
        return lambda record: dumps(record, option=orjson.OPT_SORT_KEYS)
    getters = [getter(f) for f in fields]
    if len(getters) == 1:
        (get,) = getters

        def one(record: dict[str, Any]) -> bytes:
            value = get(record)
            return dumps(None if value is MISSING else value, option=orjson.OPT_SORT_KEYS)

        return one

    def many(record: dict[str, Any]) -> bytes:
        return dumps([None if (v := g(record)) is MISSING else v for g in getters], option=orjson.OPT_SORT_KEYS)

    return many


def values_of(fields: list[str]) -> Callable[[dict[str, Any]], list[Any]]:
    """``record -> [value, ...]`` for ``fields`` (None where missing)."""
    getters = [getter(f) for f in fields]
    return lambda record: [None if (v := g(record)) is MISSING else v for g in getters]
