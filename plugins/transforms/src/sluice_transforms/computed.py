"""``set``: computed fields, from expressions or per-record templates."""

from __future__ import annotations

import copy
from collections.abc import Callable, ItemsView, KeysView, ValuesView
from datetime import date, datetime
from typing import Any

from pydantic import Field, field_validator

from sluice import ComponentConfig, Record, RecordTransform, RunContext, late_template

from .expressions import compile_expression
from .paths import MISSING, get_path, set_path, split_path


def is_template(text: str) -> bool:
    """Jinja markers make a value a template; any other string is an expression."""
    return "{{" in text or "{%" in text


class SetConfig(ComponentConfig):
    """Fields to compute, in order (later fields see earlier ones)."""

    fields: dict[str, Any] = late_template(
        min_length=1,
        description="Field path → value. A string with {{ }} is a Jinja template rendered per record "
                    "(record, ds, run_id... and secret() in scope); any other string is an expression "
                    "(record.latency_ms / 1000, now(), lower(record.app)); numbers, booleans, null, "
                    "lists and objects are set as they are. To set a constant string, quote it: \"'web'\".",
    )
    overwrite: bool = Field(True, description="Replace a field that already has a value (false: only fill "
                                              "missing or null fields).")

    @field_validator("fields")
    @classmethod
    def _compile(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path, spec in value.items():
            split_path(path)
            if isinstance(spec, str) and not is_template(spec):
                try:
                    compile_expression(spec)
                except ValueError as exc:
                    raise ValueError(f"field {path!r}: {exc}") from None
        return value


def _plain(value: Any) -> Any:
    """Keep records JSON-like: dates become ISO 8601 text, sets and dict views become lists."""
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, KeysView | ValuesView | ItemsView):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


class Set(RecordTransform):
    """Sets fields to computed values: expressions, Jinja templates with ``record`` in scope, or constants."""

    type = "set"
    Config = SetConfig
    config: SetConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        variables = dict(ctx.variables)
        self._setters: list[tuple[str, tuple[str, ...], Callable[[Record], Any]]] = []
        for path, spec in self.config.fields.items():
            if isinstance(spec, str) and is_template(spec):
                render = ctx.compile(spec, f"set.fields.{path}")
                compute: Callable[[Record], Any] = lambda r, render=render: render(record=r)  # noqa: E731
            elif isinstance(spec, str):
                fn = compile_expression(spec).fn
                compute = lambda r, fn=fn: _plain(fn(r, variables))  # noqa: E731
            else:
                compute = lambda r, spec=spec: _copy(spec)  # noqa: E731
            self._setters.append((path, split_path(path), compute))

    def process(self, record: Record) -> Record:
        overwrite = self.config.overwrite
        for path, parts, compute in self._setters:
            if not overwrite and _present(record, parts):
                continue
            value = compute(record)
            if len(parts) == 1:
                record[path] = value
            else:
                set_path(record, parts, value)
        return record


def _present(record: Record, parts: tuple[str, ...]) -> bool:
    value = get_path(record, parts)
    return value is not MISSING and value is not None


def _copy(value: Any) -> Any:
    # constants are shared by every record: lists and objects are copied so one record's edit stays its own
    if isinstance(value, dict | list):
        return copy.deepcopy(value)
    return value
