"""Secret values seen during a run, masked wherever text leaves the process (logs, errors).

``secret(name)`` in a job template resolves through the ``sluice_resolve_secret`` hook and records
the value here; the log pipeline and the CLI's error printer replace any recorded value with ``***``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import Registry

MASK = "***"
_values: set[str] = set()
_lock = threading.Lock()


def remember(value: str) -> str:
    """Record a secret value so it is masked from now on; returns it unchanged."""
    if value and len(value) >= 3:  # masking 1-2 char strings would garble unrelated text
        with _lock:
            _values.add(value)
    return value


def mask(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    if not _values or not text:
        return text
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def mask_any(value: Any) -> Any:
    """Mask strings inside nested dicts/lists (for structured log events)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {k: mask_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_any(v) for v in value)
    return value


def forget_all() -> None:
    """Clear remembered secrets (tests)."""
    with _lock:
        _values.clear()


def resolver(registry: Registry, placeholder: bool = False) -> Callable[[str], str]:
    """``secret(name)`` for templates: the first plugin answering ``sluice_resolve_secret`` (core
    reads the environment last); the value is remembered for masking. ``placeholder`` renders
    ``<secret:name>`` instead (validation without secrets). One path for the job loader and for
    transform worker processes alike."""

    def resolve(name: str) -> str:
        if placeholder:
            return f"<secret:{name}>"
        value = registry.hook().sluice_resolve_secret(name=str(name))
        if value is None:
            from .errors import TemplateError

            raise TemplateError(f"secret {name!r} is not set (no plugin resolved it; core looks for an "
                                f"environment variable {name!r})")
        return remember(str(value))

    return resolve
