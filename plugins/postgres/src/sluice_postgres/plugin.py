"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice import hookimpl

if TYPE_CHECKING:
    from sluice.connections import Connection

TYPES = ("postgres", "postgresql")


@hookimpl
def sluice_sources() -> list[type]:
    from .source import PostgresSource

    return [PostgresSource]


@hookimpl
def sluice_sinks() -> list[type]:
    from .sink import PostgresSink

    return [PostgresSink]


@hookimpl
def sluice_connection_fields(component_type: str, connection: Connection) -> dict[str, Any] | None:
    """Host, port, database, user, password and TLS files of a ``postgres`` block from a connection."""
    if component_type not in TYPES:
        return None
    from .connections import postgres_fields

    return postgres_fields(connection)
