"""Checkpoints on S3: one small JSON object per partition, so every save is one atomic PUT.

Layout: ``{prefix}/{job}/{run_id}/{safe_key(partition)}.json`` holding ``{"partition", "state"}``.
Useful when runs move between machines (Airflow workers) and a local file would be lost. The
objects are kept through the S3 staging store, in the format of core's staged checkpoints.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sluice import CheckpointStore, RunContext
from sluice.records import safe_key
from sluice.staged_io import StagedCheckpoints, StagedFolder

from .client import S3Connection, S3Uri
from .staging import S3StagingStore


class S3CheckpointsConfig(S3Connection):
    """Where checkpoint objects live."""

    uri: S3Uri = Field(description="s3://bucket/prefix for checkpoint objects (one per job, run and partition).")


class S3CheckpointStore(CheckpointStore):
    """Keeps each partition's checkpoint as its own S3 object (atomic per save)."""

    type = "s3"
    Config = S3CheckpointsConfig
    config: S3CheckpointsConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self.store = S3StagingStore(self.config.uri, self.config, ctx)

    def describe(self) -> str:
        return self.config.uri

    def _run(self, job: str, run_id: str) -> StagedCheckpoints:
        return StagedCheckpoints(StagedFolder(self.store, f"{safe_key(job)}/{safe_key(run_id)}"))

    def load(self, job: str, run_id: str) -> dict[str, dict[str, Any]]:
        return self._run(job, run_id).load(job, run_id)

    def save(self, job: str, run_id: str, partition: str, state: dict[str, Any]) -> None:
        self._run(job, run_id).save(job, run_id, partition, state)

    def clear(self, job: str, run_id: str) -> None:
        self._run(job, run_id).clear(job, run_id)

    def close(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
