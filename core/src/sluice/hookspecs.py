"""The hooks a Sluice plugin implements.

Contribution hooks return lists of component classes; the registry maps their ``type`` names.
New hooks are only ever added, and existing ones only gain arguments, so plugins keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .components import CheckpointStore, Sink, Source, Transform
    from .config import Job
    from .connections import Connection
    from .context import RunContext
    from .exporting import MetricsExporter
    from .formats import Format
    from .staging import StagingStore

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


@hookspec
def sluice_formats() -> list[type[Format]]:
    """File format classes this plugin provides (core ships ``jsonl``; sluice-formats ``parquet``,
    ``csv``, ``tsv``): the readers and writers behind ``format:`` of the file-based sources and sinks."""


@hookspec(firstresult=True)
def sluice_resolve_secret(name: str) -> str | None:
    """Resolve ``secret(name)`` from a job template; return None to let the next plugin try.

    Core's implementation reads the environment variable ``name`` and runs last, so a plugin
    (an Airflow connection, a vault) can answer first.
    """


@hookspec(firstresult=True)
def sluice_lookup_connection(conn_id: str) -> Connection | None:
    """The orchestrator connection ``conn_id`` (for ``connection: <conn_id>`` in a component block).

    sluice-airflow answers from Airflow's connections. Return None when this plugin has no
    connections to offer here; raise ``ConfigError`` naming ``conn_id`` when it should have one
    and it is not defined.
    """


@hookspec(firstresult=True)
def sluice_connection_fields(component_type: str, connection: Connection) -> dict[str, Any] | None:
    """The fields of a ``component_type`` block filled from ``connection``; None: not a type of yours.

    The plugin that owns a component maps connections onto its own fields (hosts, credentials,
    endpoint), so an orchestrator adapter knows nothing of Elasticsearch or S3. Secret values are
    never returned as values: use ``connection.secret(field)``, a template resolved (and masked)
    at run time. Fields written in the block win over the returned ones.
    """


@hookspec(firstresult=True)
def sluice_staging_store(uri: str, options: dict[str, Any], job: Job, ctx: RunContext) -> StagingStore | None:
    """A store for staged runs at ``uri`` when this plugin serves its scheme; None lets the next try.

    sluice-s3 serves ``s3://``; core's local-directory store answers last. ``options`` is the
    ``staging.options`` block (rendered); ``job`` lets a store borrow settings from the job's own
    components (the S3 store takes endpoint and credentials from the job's first S3 component).
    """


@hookspec
def sluice_metrics_exporters() -> list[type[MetricsExporter]]:
    """Metrics exporter classes this plugin provides (sluice-metrics: ``prometheus``, ``statsd``).

    A job's ``metrics:`` block (or ``$SLUICE_METRICS``) names exporters by their ``type`` and is
    validated with their ``Config``; see ``sluice.exporting.MetricsExporter`` for what core calls.
    """
