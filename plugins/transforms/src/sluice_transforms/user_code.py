"""``python``: run a function from the user's own code, per record or per batch.

A job file that can name any importable callable can run any code (``subprocess:run``): job
files are code and are reviewed as code. Operators can narrow what the step may import with
``SLUICE_PYTHON_ALLOW`` (module names; each allows its submodules too).
"""

from __future__ import annotations

import functools
import importlib
import os
import types
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
    def _importable(cls, value: str) -> str:
        module, _, name = value.partition(":")
        if not module or not name or not all(p.isidentifier() for p in [*module.split("."), *name.split(".")]):
            raise ValueError(f"{value!r} is not of the form 'package.module:function'")
        try:  # at validation, so `sluice validate` reports it (exit 2) rather than the run failing later
            load_callable(value)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("transform python: ")) from None
        return value


PYTHON_ALLOW = "SLUICE_PYTHON_ALLOW"
"""Comma-separated module names the ``python`` step may import from (each with its submodules);
unset: any importable module."""


def allowed_modules() -> tuple[str, ...] | None:
    """The modules of ``SLUICE_PYTHON_ALLOW``, or None when it is not set."""
    spec = os.environ.get(PYTHON_ALLOW)
    return None if spec is None else tuple(m for m in spec.replace(",", " ").split() if m)


def _allowed(module: str, allow: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allow)


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the function part may be dotted: ``module:Class.method``).

    With ``SLUICE_PYTHON_ALLOW`` set, the module must be one it allows (checked before importing),
    the dotted part may not step into another module, and the callable must be defined in an
    allowed module (a function the module imported from elsewhere, ``from subprocess import run``,
    is refused)."""
    module_name, _, attr = spec.partition(":")
    allow = allowed_modules()
    if allow is not None and not _allowed(module_name, allow):
        raise ConfigError(f"transform python: {spec!r}: module {module_name!r} is not allowed by {PYTHON_ALLOW} "
                          f"({', '.join(allow) or 'empty'})")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
            if allow is not None and isinstance(obj, types.ModuleType):
                raise ConfigError(f"transform python: {spec!r}: {part!r} is a module; with {PYTHON_ALLOW} set, "
                                  "name a function of the allowed module itself")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"transform python: cannot import {spec!r}: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"transform python: {spec!r} is a {type(obj).__name__}, not a function")
    defined_in = getattr(obj, "__module__", None)
    if allow is not None and isinstance(defined_in, str) and not _allowed(defined_in, allow):
        raise ConfigError(f"transform python: {spec!r} is defined in module {defined_in!r}, which {PYTHON_ALLOW} "
                          f"does not allow ({', '.join(allow) or 'empty'})")
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
