"""The hooks a Sluice plugin implements.

Contribution hooks return lists of component classes; the registry maps their ``type`` names.
New hooks are only ever added, and existing ones only gain arguments, so plugins keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .components import CheckpointStore, Sink, Source, Transform

PROJECT = "sluice"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def sluice_sources() -> list[type[Source]]:
    """Source classes this plugin provides."""


@hookspec
def sluice_sinks() -> list[type[Sink]]:
    """Sink classes this plugin provides (a sink can also serve as the dead-letter store)."""


@hookspec
def sluice_transforms() -> list[type[Transform]]:
    """Transform classes this plugin provides."""


@hookspec
def sluice_checkpoint_stores() -> list[type[CheckpointStore]]:
    """Checkpoint store classes this plugin provides (core ships ``local``)."""


@hookspec(firstresult=True)
def sluice_resolve_secret(name: str) -> str | None:
    """Resolve ``secret(name)`` from a job template; return None to let the next plugin try.

    Core's implementation reads the environment variable ``name`` and runs last, so a plugin
    (an Airflow connection, a vault) can answer first.
    """


@hookspec(firstresult=True)
def sluice_expand_block(kind: str, block: dict[str, Any]) -> dict[str, Any] | None:
    """Rewrite a component block before it is rendered and validated; None leaves it as it is.

    For shorthands a plugin understands, e.g. sluice-airflow's ``connection: my_es``, which it
    expands into the component's own fields (hosts, user, ``secret()`` templates).
    """
