"""Entry-point module: hook implementations only, no client imports at module level."""

from __future__ import annotations

from sluice import hookimpl


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
