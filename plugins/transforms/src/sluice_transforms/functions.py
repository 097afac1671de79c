"""The functions an expression may call: a fixed table, nothing else is reachable.

Every function takes plain JSON-like values and returns plain values (or a datetime, which
computed fields write out as ISO 8601). None passes through the string helpers, so a missing
field never raises where a filter only asks "is it there and does it match".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sluice.limits import safe_join, safe_round


def _str_or_none(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    def call(value: Any) -> Any:
        return None if value is None else fn(str(value))

    call.__doc__ = fn.__doc__
    return call


def parse_date(value: Any, format: str | None = None) -> datetime | None:
    """A timezone-aware datetime from an ISO 8601 string, an epoch number (s or ms) or a ``format``.

    Naive values are taken as UTC; None stays None.
    """
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        raise TypeError("parse_date: a boolean is not a date")
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= 100_000_000_000 else value  # beyond year 5138 in s: ms
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip()
    if format is not None:
        dt = datetime.strptime(text, format)
    else:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


def today() -> str:
    """Today's date in UTC, ``YYYY-MM-DD``."""
    return datetime.now(UTC).date().isoformat()


def isoformat(value: Any) -> str | None:
    """ISO 8601 text of a date or datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return parse_date(value).isoformat()  # type: ignore[union-attr]


def timestamp(value: Any) -> float | None:
    """Seconds since the epoch of a date, datetime or parseable string."""
    dt = parse_date(value)
    return None if dt is None else dt.timestamp()


def coalesce(*values: Any) -> Any:
    """The first argument that is not None."""
    for value in values:
        if value is not None:
            return value
    return None


def get(obj: Any, path: str, default: Any = None) -> Any:
    """The value at a dotted ``path`` inside ``obj`` (``get(record, 'user.name')``), or ``default``."""
    from .paths import MISSING, get_path

    value = get_path(obj, path)
    return default if value is MISSING else value


def length(value: Any) -> int | None:
    """Length of a string, list or mapping; None stays None."""
    return None if value is None else len(value)


def join(values: Any, separator: str = ",") -> str:
    """The items of a list joined as text (None as empty text); refused past the size limit."""
    return safe_join(separator, values, convert=lambda v: "" if v is None else str(v))


def total(values: Any, start: Any = 0) -> Any:
    """``sum`` of numbers (adding lists or text item by item would take quadratic time)."""
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise TypeError("sum adds numbers: start must be a number")
    return sum(values, start)


def _contains(haystack: Any, needle: Any) -> bool:
    """True when ``needle`` is in ``haystack`` (substring, list item or key); False for None."""
    return haystack is not None and needle in haystack


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": length,
    "lower": _str_or_none(str.lower),
    "upper": _str_or_none(str.upper),
    "strip": _str_or_none(str.strip),
    "startswith": lambda s, prefix: s is not None and str(s).startswith(prefix),
    "endswith": lambda s, suffix: s is not None and str(s).endswith(suffix),
    "contains": _contains,
    "split": lambda s, sep=None: None if s is None else str(s).split(sep),
    "join": join,
    "now": now,
    "today": today,
    "parse_date": parse_date,
    "isoformat": isoformat,
    "timestamp": timestamp,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "abs": abs,
    "round": safe_round,
    "min": min,
    "max": max,
    "sum": total,
    "coalesce": coalesce,
    "get": get,
}
"""Name → function, as callable from expressions."""

METHODS: dict[type, frozenset[str]] = {
    dict: frozenset({"get", "keys", "values", "items"}),
    str: frozenset({"lower", "upper", "strip", "lstrip", "rstrip", "startswith", "endswith", "split", "find",
                    "count", "isdigit", "isalpha", "title", "replace"}),
    list: frozenset({"count", "index"}),
}
"""Methods callable on values of each type (``record.get('app')``, ``record.app.lower()``)."""
