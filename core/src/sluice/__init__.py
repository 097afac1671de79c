"""Sluice: plugin-based ETL between Elasticsearch/OpenSearch and S3.

This module stays light: it imports no client library. Plugins import what they need when a job
uses them.
"""

from __future__ import annotations

from .components import (
    CheckpointStore,
    Component,
    ComponentConfig,
    RecordTransform,
    Sink,
    SinkRun,
    Source,
    Transform,
)
from .errors import (
    ConfigError,
    JobFailed,
    PermanentError,
    PluginError,
    Reject,
    SluiceError,
    TransientError,
    UnknownTypeError,
)
from .hookspecs import hookimpl
from .records import Batch, DeadLetter, Partition, Record, WriteResult
from .templating import late_template

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "CheckpointStore",
    "Component",
    "ComponentConfig",
    "ConfigError",
    "DeadLetter",
    "JobFailed",
    "Partition",
    "PermanentError",
    "PluginError",
    "Record",
    "RecordTransform",
    "Reject",
    "Sink",
    "SinkRun",
    "SluiceError",
    "Source",
    "Transform",
    "TransientError",
    "UnknownTypeError",
    "WriteResult",
    "__version__",
    "hookimpl",
    "late_template",
]
