"""Core's own plugin: registered through the same ``sluice.plugins`` entry point as any other."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..config import Job
    from ..context import RunContext
    from ..staging import StagingStore


@hookimpl
def sluice_sources() -> list[type]:
    from .files import FileSource

    return [FileSource]


@hookimpl
def sluice_sinks() -> list[type]:
    from .files import FileSink

    return [FileSink]


@hookimpl
def sluice_formats() -> list[type]:
    from .jsonl import JsonlFormat

    return [JsonlFormat]


@hookimpl
def sluice_checkpoint_stores() -> list[type]:
    from .checkpoints import LocalCheckpointStore

    return [LocalCheckpointStore]


@hookimpl(trylast=True)
def sluice_resolve_secret(name: str) -> str | None:
    """The default: an environment variable of that name."""
    return os.environ.get(name)


@hookimpl(trylast=True)
def sluice_staging_store(uri: str, options: dict[str, Any], job: Job, ctx: RunContext) -> StagingStore | None:
    """A local directory (a path or ``file://``) as the staging store; other schemes are for plugins."""
    from ..staging import local_store

    return local_store(uri, options)
