"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice import hookimpl

if TYPE_CHECKING:
    from sluice.connections import Connection

TYPES = frozenset({"elasticsearch", "opensearch"})  # the type and alias of both components


@hookimpl
def sluice_sources() -> list[type]:
    from .source import EsSource

    return [EsSource]


@hookimpl
def sluice_sinks() -> list[type]:
    from .sink import EsSink

    return [EsSink]


@hookimpl
def sluice_connection_fields(component_type: str, connection: Connection) -> dict[str, Any] | None:
    """An orchestrator connection as ``elasticsearch``/``opensearch`` fields (hosts, credentials, TLS)."""
    if component_type not in TYPES:
        return None
    from .connection import connection_fields

    return connection_fields(connection)
