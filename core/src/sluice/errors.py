"""Typed errors. Each carries the context where it was raised, so the CLI prints one clear line."""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


class SluiceError(Exception):
    """Base of every error Sluice raises on purpose; the CLI prints these without a traceback."""


class ConfigError(SluiceError):
    """A job file or component block is invalid. ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message if len(self.problems) == 1 else "\n".join(self.problems))


class PluginError(SluiceError):
    """A plugin could not be loaded, or two plugins claim the same type name."""


class UnknownTypeError(ConfigError):
    """A ``type:`` names no installed component of that kind."""


class TemplateError(ConfigError):
    """A Jinja template in the job could not be rendered (syntax, undefined name, missing secret)."""


class JobFailed(SluiceError):
    """The run ended without delivering everything: a partition failed or the error rate was too high."""


class TransientError(SluiceError):
    """A failure that may succeed on retry (connection error, timeout, 429, 5xx)."""


class PermanentError(SluiceError):
    """A failure that will fail again on retry (bad request, access denied, missing bucket)."""


class Reject(Exception):
    """Raised by a record transform to send the record to dead letters with ``reason``.

    Not a SluiceError: it never ends the run, it only routes one record.
    """

    def __init__(self, reason: str, error_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type or "Rejected"


def describe_error(exc: BaseException) -> str:
    """One line for an error: our own errors speak for themselves, others get their class name."""
    return str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"


def is_transient(exc: BaseException) -> bool:
    """The one rule for what is retried, everywhere: ``TransientError`` (plugins classify 429, 5xx
    and their clients' network errors into it) and network-level ``ConnectionError``/``TimeoutError``.
    Anything else fails at once: retrying a permanent refusal or a bug only wastes time."""
    if isinstance(exc, PermanentError | ConfigError):
        return False
    return isinstance(exc, TransientError | ConnectionError | TimeoutError)


def is_bug(exc: BaseException) -> bool:
    """A programming error in a component (TypeError, KeyError...), not a failure of the world outside."""
    return not isinstance(exc, SluiceError | OSError)


def blame(exc: BaseException, component: str) -> None:
    """Note on ``exc`` which component raised it (the first note wins), for ``bug_report``."""
    if not hasattr(exc, "sluice_component"):
        try:
            exc.sluice_component = component  # type: ignore[attr-defined]
        except AttributeError:  # an exception type without a __dict__: the caller's label stays
            pass


def bug_report(exc: BaseException, component: str) -> str:
    """``<component> raised TypeError: ... (a bug, not retried; at plugin.py:97 in write: ...)``:
    the last frames of the component's own code, not the engine's that called it."""
    import sysconfig
    import traceback
    from pathlib import Path

    core = Path(__file__).resolve().parent
    skip = (str(core), sysconfig.get_paths()["stdlib"], str(Path(sysconfig.get_paths()["purelib"]) / "tenacity"))
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not f.filename.startswith(skip) or f.filename.startswith(str(core / "builtin"))]
    shown = (own or frames)[-3:]
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" + (f": {f.line.strip()}" if f.line else "")
                      for f in shown)
    return f"{component} raised {type(exc).__name__}: {exc} (a bug, not retried; at {where})"


def format_validation_error(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> ConfigError:
    """Field path plus pydantic's message; never the input value (it may be a secret).

    With ``model`` (the class that was validated), an unknown key names the close option:
    ``unknown option 'compresion'; did you mean 'compression'?``.
    """
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = err["loc"]
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and model is not None and loc and isinstance(loc[-1], str):
            options = option_names(model, loc[:-1])
            msg, loc = unknown_option(loc[-1], options), loc[:-1]
        path = ".".join(str(p) for p in loc)
        problems.append(f"{where}: {path}: {msg}" if path else f"{where}: {msg}")
    return ConfigError(problems[0], problems)


def unknown_option(key: str, options: list[str] | None) -> str:
    """``unknown option 'compresion'; did you mean 'compression'?`` (or the options there are)."""
    if not options:
        return f"unknown option {key!r}"
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    if close:
        return f"unknown option {key!r}; did you mean {close[0]!r}?"
    return f"unknown option {key!r}; known options: {', '.join(sorted(options))}"


def option_names(model: type[BaseModel], path: tuple[int | str, ...]) -> list[str] | None:
    """The keys a user may write at ``path`` inside ``model`` (field aliases or names), following
    nested models through optionals, unions, lists and dicts; None when the path cannot be followed."""
    found = _models_at(model, path)
    if len(found) != 1:
        return None
    target = found[0]
    names = []
    for name, info in target.model_fields.items():
        names.append(info.alias or name)
        if info.alias and target.model_config.get("populate_by_name"):
            names.append(name)
    return names


def _models_at(model: type[BaseModel], path: tuple[int | str, ...]) -> list[type[BaseModel]]:
    candidates: list[Any] = [model]
    for part in path:
        following: list[Any] = []
        for tp in (t for c in candidates for t in _unwrap(c)):
            origin, args = get_origin(tp), get_args(tp)
            if _is_model(tp) and isinstance(part, str):
                if tp.__name__ == part:  # pydantic names the union member it tried
                    following.append(tp)
                for name, info in tp.model_fields.items():
                    if part in (name, info.alias):
                        following.append(info.annotation)
            elif isinstance(part, int) and isinstance(origin, type) and issubclass(origin, Sequence) and args:
                following.append(args[0])
            elif isinstance(part, str) and isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
                following.append(args[1])
        candidates = following
    return [t for c in candidates for t in _unwrap(c) if _is_model(t)]


def _unwrap(tp: Any) -> list[Any]:
    """``Annotated[X, ...]`` → X; ``X | Y | None`` → X, Y."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(tp) if arg is not type(None) for t in _unwrap(arg)]
    return [tp]


def _is_model(tp: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(tp, type) and issubclass(tp, BaseModel)
