"""Structured logging: JSON lines for machines, readable lines on a terminal; secrets masked."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog

from . import secrets


def _mask_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return secrets.mask_any(event)


def _orjson_dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure_logging(json_logs: bool | None = None, level: str = "INFO") -> None:
    """Set up structlog. ``json_logs=None`` picks JSON unless stderr is a terminal."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    """The ``sluice`` logger."""
    return structlog.get_logger("sluice")
