"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice import hookimpl

if TYPE_CHECKING:
    from sluice.config import Job
    from sluice.connections import Connection
    from sluice.context import RunContext
    from sluice.staging import StagingStore


@hookimpl
def sluice_sources() -> list[type]:
    from .source import S3Source

    return [S3Source]


@hookimpl
def sluice_sinks() -> list[type]:
    from .sink import S3Sink

    return [S3Sink]


@hookimpl
def sluice_checkpoint_stores() -> list[type]:
    from .checkpoints import S3CheckpointStore

    return [S3CheckpointStore]


@hookimpl
def sluice_connection_fields(component_type: str, connection: Connection) -> dict[str, Any] | None:
    """Endpoint, region, profile and keys of an ``s3`` block from an AWS connection."""
    if component_type != "s3":
        return None
    from .connections import s3_fields

    return s3_fields(connection)


@hookimpl
def sluice_staging_store(uri: str, options: dict[str, Any], job: Job, ctx: RunContext) -> StagingStore | None:
    """Staging under an ``s3://bucket/prefix``; other schemes are left to the next plugin."""
    if not uri.startswith("s3://"):
        return None
    from .staging import open_staging_store

    return open_staging_store(uri, options, job, ctx)
