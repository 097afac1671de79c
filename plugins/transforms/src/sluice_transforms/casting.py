"""``cast``: convert field values to int, float, str, bool, datetime or date."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Literal

import orjson
from pydantic import Field, field_validator

from sluice import ComponentConfig, Record, RecordTransform, Reject, RunContext

from .functions import parse_date
from .paths import MISSING, getter, set_path, split_path

CastType = Literal["int", "float", "str", "bool", "datetime", "date"]

TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
FALSE = frozenset({"false", "f", "no", "n", "off", "0", ""})


class Unconvertible(ValueError):
    """A value that does not convert, with why when there is more to say than "it does not"
    (the fraction an int would lose). Python's own errors (``could not convert string to float``)
    are never shown: they describe the conversion tried, not the value."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


def to_int(value: Any) -> int:
    """Integers, integral floats and numeric text; a fraction would be lost, so it is an error."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise Unconvertible("it has a fractional part" if math.isfinite(value) else "")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return to_int(float(text))
    raise Unconvertible()


def to_float(value: Any) -> float:
    """Numbers and numeric text."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return float(value)
    raise Unconvertible()


def to_str(value: Any) -> str:
    """Text; objects and lists become compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_bool(value: Any) -> bool:
    """Booleans, 0/1, and the words true/false, yes/no, on/off, t/f, y/n (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
    raise Unconvertible("expected true/false, yes/no, on/off, t/f, y/n or 1/0")


def to_datetime(value: Any) -> str:
    """ISO 8601 text in UTC from ISO text, epoch seconds/milliseconds or a datetime."""
    dt = parse_date(value)
    assert dt is not None
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_date(value: Any) -> str:
    """``YYYY-MM-DD`` from any value ``datetime`` accepts (a datetime's UTC date)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    dt = parse_date(value)
    assert dt is not None
    return dt.astimezone(UTC).date().isoformat()


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "int": to_int, "float": to_float, "str": to_str, "bool": to_bool, "datetime": to_datetime, "date": to_date,
}


class CastConfig(ComponentConfig):
    """Fields and the types to convert them to."""

    fields: dict[str, CastType] = Field(min_length=1, description="Field path → int, float, str, bool, datetime "
                                                                  "(ISO 8601, UTC) or date (YYYY-MM-DD).")
    on_error: Literal["dead_letter", "null", "keep"] = Field(
        "dead_letter", description="When a value does not convert: dead-letter the record, set the field to null, "
                                   "or keep the value as it was.")

    @field_validator("fields")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        for path in value:
            split_path(path)
        return value


class Cast(RecordTransform):
    """Converts field values to the given types; missing fields and nulls are left alone."""

    type = "cast"
    Config = CastConfig
    config: CastConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._casts = [(path, split_path(path), getter(path), CONVERTERS[kind], kind)
                       for path, kind in self.config.fields.items()]

    def process(self, record: Record) -> Record:
        for path, parts, get, convert, kind in self._casts:
            value = get(record)
            if value is MISSING or value is None:
                continue
            try:
                new = convert(value)
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                policy = self.config.on_error
                if policy == "dead_letter":
                    why = f" ({exc.why})" if isinstance(exc, Unconvertible) and exc.why else ""
                    raise Reject(f"cast: field {path!r}: cannot convert {_short(value)} to {kind}{why}",
                                 "CastError") from None
                if policy == "keep":
                    continue
                new = None
            if len(parts) == 1:
                record[path] = new
            else:
                set_path(record, parts, new)
        return record


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
