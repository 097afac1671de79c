"""Typed errors. Each carries the context where it was raised, so the CLI prints one clear line."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


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


def format_validation_error(exc: ValidationError, where: str) -> ConfigError:
    """Field path plus pydantic's message; never the input value (it may be a secret)."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        problems.append(f"{where}: {path}: {err['msg']}" if path else f"{where}: {err['msg']}")
    return ConfigError(problems[0], problems)
