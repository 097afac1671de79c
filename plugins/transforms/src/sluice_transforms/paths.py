"""Dotted paths into nested records (``user.address.city``) and field patterns with wildcards.

A path is split on dots once, at config time; the getters below walk the split form so the hot
loop does no string work. A top-level key that contains dots (``"a.b"``) is still found by
``get_path`` because an exact key match is tried first.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

MISSING: Any = object()
"""Returned by the getters when a path does not exist (None is a value)."""


def split_path(path: str, separator: str = ".") -> tuple[str, ...]:
    """``"a.b.c"`` → ``("a", "b", "c")``; empty segments are a config error."""
    parts = tuple(path.split(separator))
    if not path or any(p == "" for p in parts):
        raise ValueError(f"invalid field path {path!r}: empty segment")
    return parts


def get_path(obj: Any, path: str | tuple[str, ...]) -> Any:
    """The value at ``path`` inside ``obj``, or ``MISSING``."""
    if isinstance(path, str):
        if isinstance(obj, dict) and path in obj:
            return obj[path]
        path = tuple(path.split("."))
    for part in path:
        if isinstance(obj, dict):
            obj = obj.get(part, MISSING)
            if obj is MISSING:
                return MISSING
        elif isinstance(obj, list) and part.lstrip("-").isdigit():
            try:
                obj = obj[int(part)]
            except IndexError:
                return MISSING
        else:
            return MISSING
    return obj


def getter(path: str) -> Any:
    """A fast ``record -> value | MISSING`` for one path (plain keys skip the walk)."""
    if "." not in path:
        return lambda record: record.get(path, MISSING)
    parts = split_path(path)

    def get(record: dict[str, Any]) -> Any:
        if path in record:
            return record[path]
        return get_path(record, parts)

    return get


def set_path(obj: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    """Set ``value`` at ``parts``, creating intermediate objects; a non-object in the way is an error."""
    for part in parts[:-1]:
        nxt = obj.get(part, MISSING)
        if nxt is MISSING or nxt is None:
            nxt = obj[part] = {}
        elif not isinstance(nxt, dict):
            raise ValueError(f"cannot set {'.'.join(parts)!r}: {part!r} holds a {type(nxt).__name__}, not an object")
        obj = nxt
    obj[parts[-1]] = value


def pop_path(obj: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """Remove and return the value at ``parts`` (``MISSING`` when absent)."""
    for part in parts[:-1]:
        obj = obj.get(part, MISSING)
        if not isinstance(obj, dict):
            return MISSING
    return obj.pop(parts[-1], MISSING)


def has_magic(segment: str) -> bool:
    """True when a pattern segment uses ``*``, ``?`` or ``[...]``."""
    return any(c in segment for c in "*?[")


def select_paths(record: dict[str, Any], patterns: list[tuple[str, ...]]) -> dict[str, Any]:
    """A new record holding only the fields matched by ``patterns`` (nested structure kept)."""
    out: dict[str, Any] = {}
    for segments in patterns:
        _select(record, segments, out)
    return out


def _select(src: dict[str, Any], segments: tuple[str, ...], dst: dict[str, Any]) -> None:
    head, rest = segments[0], segments[1:]
    keys = [k for k in src if fnmatchcase(k, head)] if has_magic(head) else ([head] if head in src else [])
    for key in keys:
        value = src[key]
        if not rest:
            dst[key] = value
        elif isinstance(value, dict):
            sub = dst.get(key)
            if not isinstance(sub, dict):
                sub = {}
            _select(value, rest, sub)
            if sub:
                dst[key] = sub


def drop_paths(record: dict[str, Any], patterns: list[tuple[str, ...]]) -> dict[str, Any]:
    """``record`` with the fields matched by ``patterns`` removed (in place)."""
    for segments in patterns:
        _drop(record, segments)
    return record


def _drop(src: dict[str, Any], segments: tuple[str, ...]) -> None:
    head, rest = segments[0], segments[1:]
    keys = [k for k in src if fnmatchcase(k, head)] if has_magic(head) else ([head] if head in src else [])
    for key in keys:
        if not rest:
            del src[key]
        elif isinstance(src[key], dict):
            _drop(src[key], rest)
