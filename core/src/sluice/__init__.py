"""Sluice: plugin-based ETL between Elasticsearch/OpenSearch and S3.

Everything a plugin author needs is importable from here. The module stays light: it imports no
client library, and the names that need templating or logging (``RunContext``, ``retry_call``...)
are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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
    is_transient,
)
from .hookspecs import hookimpl
from .records import Batch, DeadLetter, Partition, Record, WriteResult
from .templating import late_template

if TYPE_CHECKING:
    from .connections import Connection
    from .context import RunContext
    from .metrics import Metrics
    from .retry import retry_call
    from .settings import RetryPolicy, RuntimeConfig
    from .staging import StagingStore

__version__ = "0.1.0"

_LAZY = {  # name -> module, imported when first used
    "Connection": "connections",
    "Metrics": "metrics",
    "RetryPolicy": "settings",
    "RunContext": "context",
    "RuntimeConfig": "settings",
    "StagingStore": "staging",
    "retry_call": "retry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sluice' has no attribute {name!r}")


__all__ = [
    "Batch",
    "CheckpointStore",
    "Component",
    "ComponentConfig",
    "ConfigError",
    "Connection",
    "DeadLetter",
    "JobFailed",
    "Metrics",
    "Partition",
    "PermanentError",
    "PluginError",
    "Record",
    "RecordTransform",
    "Reject",
    "RetryPolicy",
    "RunContext",
    "RuntimeConfig",
    "Sink",
    "SinkRun",
    "SluiceError",
    "Source",
    "StagingStore",
    "Transform",
    "TransientError",
    "UnknownTypeError",
    "WriteResult",
    "__version__",
    "hookimpl",
    "is_transient",
    "late_template",
    "retry_call",
]
