"""Sandboxed Jinja templating of job values, and the data interval a run covers.

Values are rendered after the YAML is parsed, so templates can never change the file's structure.
Fields a component renders per record (``index: "logs-{{ record.app }}"``) are declared with
``late_template()`` and left alone at load time.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from jinja2 import StrictUndefined
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from pydantic import BaseModel, Field

from .errors import TemplateError

LATE_KEY = "x-sluice-template"


def late_template(default: Any = ..., **kwargs: Any) -> Any:
    """A pydantic Field the component renders itself, per record, with ``record`` in scope."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[LATE_KEY] = "record"
    return Field(default, json_schema_extra=extra, **kwargs)


def late_fields(model: type[BaseModel]) -> set[str]:
    """Names of the model's fields declared with ``late_template()``."""
    out = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(LATE_KEY):
            out.add(info.alias or name)
    return out


class IsoDateTime(datetime):
    """A datetime that renders as ISO 8601 in templates (``2024-01-01T00:00:00+00:00``)."""

    def __str__(self) -> str:
        return self.isoformat()

    @classmethod
    def of(cls, dt: datetime) -> IsoDateTime:
        return cls(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, dt.microsecond, dt.tzinfo)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO date or timestamp; naive values are UTC."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TemplateError(f"not an ISO date or timestamp: {text!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Interval:
    """The half-open data interval ``[start, end)`` a run reads."""

    start: datetime
    end: datetime

    @classmethod
    def for_day(cls, ds: str | date) -> Interval:
        day = date.fromisoformat(ds) if isinstance(ds, str) else ds
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return cls(start, start + timedelta(days=1))

    @classmethod
    def between(cls, start: str | datetime, end: str | datetime) -> Interval:
        s = parse_timestamp(start) if isinstance(start, str) else start
        e = parse_timestamp(end) if isinstance(end, str) else end
        if e <= s:
            raise TemplateError(f"the interval end {e.isoformat()} is not after its start {s.isoformat()}")
        return cls(s, e)

    @classmethod
    def yesterday(cls) -> Interval:
        """The default when no interval is given: the previous UTC day, like a daily schedule."""
        return cls.for_day(datetime.now(UTC).date() - timedelta(days=1))

    @property
    def label(self) -> str:
        """``20240101T000000-20240102T000000``: the interval as a file or folder name."""
        return f"{self.start:%Y%m%dT%H%M%S}-{self.end:%Y%m%dT%H%M%S}"

    def default_run_id(self, job_name: str) -> str:
        """Deterministic: two runs of one job over one interval share it (and so their output keys)."""
        return f"{job_name}-{self.label}"


def template_vars(job_name: str, interval: Interval, run_id: str) -> dict[str, Any]:
    """The variables every job template sees (``secret`` is added by the environment)."""
    start, end = IsoDateTime.of(interval.start), IsoDateTime.of(interval.end)
    return {
        "job_name": job_name,
        "run_id": run_id,
        "ds": start.date().isoformat(),
        "ds_nodash": start.strftime("%Y%m%d"),
        "next_ds": end.date().isoformat(),
        "ts": start.isoformat(),
        "data_interval_start": start,
        "data_interval_end": end,
        "env": Environ(os.environ),
    }


class Environ(dict[str, str]):
    """The environment as templates see it (``env.TEAM``, ``env.get('TEAM', 'search')``): a plain
    dict, of its own class so that a missing variable is reported as one."""


class Undefined(StrictUndefined):
    """Undefined names are errors, worded for a job file's author: a missing environment variable
    is named as one, and an unknown name suggests the close ones in ``scope`` and ``extra``."""

    __slots__ = ()
    scope: ClassVar[dict[str, Any]] = {}  # the environment's globals (live), set by make_environment
    extra: ClassVar[tuple[str, ...]] = ()  # names passed at render time (``record``)

    @property
    def _undefined_message(self) -> str:
        if not self._undefined_hint and isinstance(self._undefined_obj, Environ):
            return f"environment variable {self._undefined_name} is not set"
        if not self._undefined_hint and self._undefined_obj is missing and isinstance(self._undefined_name, str):
            known = sorted({*self.scope, *self.extra})
            close = difflib.get_close_matches(self._undefined_name, known, n=3, cutoff=0.6)
            alternatives = " or ".join(repr(c) for c in close)
            return f"{self._undefined_name!r} is undefined" + (f"; did you mean {alternatives}?" if close else "")
        return str(super()._undefined_message)


def make_environment(resolve_secret: Callable[[str], str],
                     extra_names: tuple[str, ...] = ("record",)) -> ImmutableSandboxedEnvironment:
    """A sandboxed environment: no attribute escapes; an undefined name is an error that suggests
    close ones among the globals and ``extra_names`` (variables given at render time)."""
    env = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
    env.globals["secret"] = resolve_secret
    env.undefined = type("Undefined", (Undefined,), {"__slots__": (), "scope": env.globals, "extra": extra_names})
    return env


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


class Renderer:
    """Renders job values with one environment and one set of variables."""

    def __init__(self, variables: dict[str, Any], resolve_secret: Callable[[str], str]) -> None:
        self.variables = variables
        self.env = make_environment(resolve_secret)
        self.env.globals.update(variables)  # globals, so a per-record render copies only ``extra``

    def render(self, value: Any, where: str = "", **extra: Any) -> Any:
        """Render every string inside ``value`` (dicts and lists walked); other values pass."""
        if isinstance(value, str):
            if not is_template(value):
                return value
            try:
                return self.env.from_string(value).render(extra)
            except TemplateError as exc:
                raise TemplateError(f"{where}: {exc}" if where else str(exc)) from None
            except JinjaError as exc:
                raise TemplateError(f"{where}: template {value!r}: {exc}") from None
        if isinstance(value, dict):
            return {k: self.render(v, f"{where}.{k}" if where else str(k), **extra) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, f"{where}[{i}]", **extra) for i, v in enumerate(value)]
        return value

    def compile(self, source: str, where: str = "") -> Callable[..., str]:
        """Compile once, render many times with extra variables (``record=...``)."""
        if not is_template(source):
            return lambda **_: source
        try:
            template = self.env.from_string(source)
        except JinjaError as exc:
            raise TemplateError(f"{where}: template {source!r}: {exc}") from None

        def render(**extra: Any) -> str:
            try:
                return template.render(extra)
            except TemplateError as exc:  # raised inside the template (secret()): say where
                raise TemplateError(f"{where}: {exc}" if where else str(exc)) from None
            except JinjaError as exc:
                raise TemplateError(f"{where}: template {source!r}: {exc}") from None

        return render
