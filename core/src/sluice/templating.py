"""Sandboxed Jinja templating of job values, and the data interval a run covers.

Values are rendered after the YAML is parsed, so templates can never change the file's structure.
Fields a component renders per record (``index: "logs-{{ record.app }}"``) are declared with
``late_template()`` and left alone at load time.

What a template can read: the job variables, ``record`` (per record), ``secret(name)`` (masked in
logs and errors) and single environment variables through ``env`` (``Environ``: never the whole
environment, never a variable named like a credential, only ``SLUICE_ENV_ALLOW``'s when it is
set). What it can do is bounded in time and memory (``sandbox.py``), and whatever it raises
becomes a config error naming the field and the template (``template_error``).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from jinja2 import StrictUndefined
from jinja2 import TemplateError as JinjaError
from jinja2.utils import missing
from pydantic import BaseModel, Field

from . import sandbox
from .errors import TemplateError
from .limits import LimitExceeded
from .sandbox import BoundedEnvironment

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
        "env": Environ.from_os(),
    }


ENV_ALLOW = "SLUICE_ENV_ALLOW"
"""Comma-separated names or shell patterns (``TEAM,REGION_*``): when set, the only environment
variables ``env`` lets templates read."""

CREDENTIAL_WORDS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE",
                    "CONNECTION_STRING", "DATABASE_URL", "COOKIE")
CREDENTIAL_PARTS = frozenset({"AUTH", "DSN", "PASS", "PW", "SESSION", "SIG", "SIGNATURE"})
CREDENTIAL_PREFIXES = ("AWS_", "AZURE_")


def looks_like_credential(name: str) -> bool:
    """Whether an environment variable's name suggests it holds a credential: it contains one of
    ``CREDENTIAL_WORDS`` (``MY_DB_PASSWORD``, ``API_KEY``), has one of ``CREDENTIAL_PARTS`` between
    underscores (``GITHUB_AUTH``, ``PG_DSN``) or starts with ``AWS_``/``AZURE_``."""
    upper = name.upper()
    return (any(word in upper for word in CREDENTIAL_WORDS) or upper.startswith(CREDENTIAL_PREFIXES)
            or not CREDENTIAL_PARTS.isdisjoint(upper.split("_")))


class Environ:
    """The environment as templates see it: ``env.TEAM``, ``env['TEAM']``, ``env.get('TEAM', 'search')``.

    Templates could otherwise copy any variable into output records, paths or requests, so:

    - ``env`` as a whole cannot be rendered, listed or iterated: a template names each variable;
    - a variable whose name looks like a credential (``looks_like_credential``) is refused, with a
      message pointing at ``secret(name)``, which reads it and masks it in logs and errors;
    - with ``SLUICE_ENV_ALLOW`` set, only the variables it names are readable.

    Only the readable variables are kept here, so a copy sent to a process pool carries no secret.
    """

    __slots__ = ("_allow", "_values")

    def __init__(self, values: dict[str, str], allow: tuple[str, ...] | None = None) -> None:
        self._allow = allow
        self._values = {k: v for k, v in values.items() if self._refusal(k) is None}

    @classmethod
    def from_os(cls) -> Environ:
        """The process environment, narrowed by ``SLUICE_ENV_ALLOW`` when it is set."""
        spec = os.environ.get(ENV_ALLOW)
        allow = None if spec is None else tuple(p for p in spec.replace(",", " ").split() if p)
        return cls(dict(os.environ), allow)

    def _refusal(self, name: str) -> str | None:
        """Why templates may not read ``name``, or None."""
        if looks_like_credential(name):
            return (f"environment variable {name} looks like a credential: templates read it with "
                    f"secret({name!r}), which masks it in logs and errors; env never exposes it")
        if self._allow is not None and not any(fnmatch.fnmatchcase(name, p) for p in self._allow):
            return (f"environment variable {name} is not readable by templates: {ENV_ALLOW} allows only "
                    f"{', '.join(self._allow) or 'none'}")
        return None

    def __getitem__(self, name: Any) -> str:
        if not isinstance(name, str):
            raise KeyError(name)
        refusal = self._refusal(name)
        if refusal is not None:
            raise TemplateError(refusal)
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The variable's value, or ``default`` when it is not set."""
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: Any) -> bool:
        try:
            self[name]
        except KeyError:
            return False
        return True

    def _whole(self, *_: Any) -> Any:
        raise TemplateError("env cannot be rendered or listed as a whole: name one variable (env.TEAM, "
                            "env.get('TEAM', 'default'))")

    __str__ = __iter__ = __len__ = __format__ = _whole

    def __repr__(self) -> str:
        return "<env>"

    def __bool__(self) -> bool:
        return True

    def __reduce__(self) -> tuple[Any, ...]:
        return Environ, (self._values, self._allow)


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
                     extra_names: tuple[str, ...] = ("record",)) -> BoundedEnvironment:
    """A sandboxed, bounded environment (``sandbox.py``): no attribute escapes, no unbounded time or
    memory; an undefined name is an error that suggests close ones among the globals and
    ``extra_names`` (variables given at render time)."""
    env = BoundedEnvironment(autoescape=False, keep_trailing_newline=True)
    env.globals["secret"] = resolve_secret
    env.undefined = type("Undefined", (Undefined,), {"__slots__": (), "scope": env.globals, "extra": extra_names})
    return env


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def template_error(exc: BaseException, source: str, where: str) -> TemplateError:
    """Any failure inside a template as a config error naming the field and the template.

    Our own errors (a missing secret, a refused variable) say what is wrong first; anything else
    raised while rendering (``1/0``, a limit, a recursion) is named with its class."""
    at = f"{where}: " if where else ""
    shown = source if len(source) <= 200 else source[:200] + "..."
    if isinstance(exc, TemplateError):
        return TemplateError(f"{at}{exc} (in template {shown!r})")
    if isinstance(exc, LimitExceeded | JinjaError):
        return TemplateError(f"{at}template {shown!r}: {exc}")
    if isinstance(exc, MemoryError):
        return TemplateError(f"{at}template {shown!r}: ran out of memory")
    return TemplateError(f"{at}template {shown!r}: {type(exc).__name__}: {exc}")


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
                return sandbox.render(self.env.from_string(value), extra)
            except Exception as exc:  # whatever a template raises is a problem of the job file
                raise template_error(exc, value, where) from None
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
        except Exception as exc:
            raise template_error(exc, source, where) from None

        def render(**extra: Any) -> str:
            try:
                return sandbox.render(template, extra)
            except Exception as exc:  # a record's template failed: the step dead-letters the record
                raise template_error(exc, source, where) from None

        return render
