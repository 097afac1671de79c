"""``python``: run a function from the user's own code, per record or per batch."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from sluice import Batch, ComponentConfig, ConfigError, Record, RecordTransform, RunContext


class PythonConfig(ComponentConfig):
    """Which function to call, and how."""

    callable: str = Field(description="'package.module:function'. The module must be importable where the "
                                      "job runs (installed, or on PYTHONPATH).")
    mode: Literal["record", "batch"] = Field(
        "record", description="record: f(record) -> record | None (None filters it; raise sluice.Reject(reason) "
                              "to dead-letter it). batch: f(records) -> records.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments passed on every call.")

    @field_validator("callable")
    @classmethod
    def _dotted(cls, value: str) -> str:
        module, _, name = value.partition(":")
        if not module or not name or not all(p.isidentifier() for p in [*module.split("."), *name.split(".")]):
            raise ValueError(f"{value!r} is not of the form 'package.module:function'")
        return value


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the function part may be dotted: ``module:Class.method``)."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise ConfigError(f"transform python: cannot import {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"transform python: {spec!r} is a {type(obj).__name__}, not a function")
    return obj


class Python(RecordTransform):
    """Calls a user function (``module:function``) on each record or on each batch's record list.

    Record mode: return the record (changed or new), None to filter it, or raise ``sluice.Reject``
    to dead-letter it; any other exception dead-letters the record with the error. Batch mode:
    return the new list; fewer records count as filtered, more as created. A batch function that
    raises dead-letters the whole batch with the error, so nothing is lost silently.
    """

    type = "python"
    Config = PythonConfig
    config: PythonConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        fn = load_callable(self.config.callable)
        self._fn = functools.partial(fn, **self.config.options) if self.config.options else fn

    def process(self, record: Record) -> Record | None:
        return self._fn(record)

    def apply(self, batch: Batch) -> Batch:
        if self.config.mode == "record":
            return super().apply(batch)
        records = batch.records
        try:
            out = self._fn(list(records))
        except Exception as exc:
            for record in records:
                batch.reject(record, f"python {self.config.callable}: {type(exc).__name__}: {exc}", type(exc).__name__)
            batch.records = []
            return batch
        out = list(out) if out is not None else []
        bad = next((r for r in out if not isinstance(r, dict)), None)
        if bad is not None:
            reason = (f"python {self.config.callable}: returned a {type(bad).__name__} in its list; "
                      "a batch function must return a list of dicts")
            for record in records:
                batch.reject(record, reason, "TypeError")
            out = []
        batch.records = out
        return batch
