"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice import hookimpl

if TYPE_CHECKING:
    from sluice.connections import Connection


@hookimpl
def sluice_sources() -> list[type]:
    from .source import HttpSource

    return [HttpSource]


@hookimpl
def sluice_sinks() -> list[type]:
    from .sink import HttpSink

    return [HttpSink]


@hookimpl
def sluice_transforms() -> list[type]:
    """``http_enrich``; httpx is imported only when a component opens."""
    from .enrich import HttpEnrich

    return [HttpEnrich]


@hookimpl
def sluice_connection_fields(component_type: str, connection: Connection) -> dict[str, Any] | None:
    """``base_url``, credentials and headers of an ``http`` or ``http_enrich`` block from an HTTP connection."""
    if component_type not in ("http", "http_enrich"):
        return None
    from .connections import http_fields

    return http_fields(connection)
