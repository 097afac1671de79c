"""Checkpoints in a local JSON file per run, replaced atomically on every save."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field

from ..components import CheckpointStore, ComponentConfig
from ..records import safe_key


class LocalCheckpointsConfig(ComponentConfig):
    """Where checkpoint files live."""

    path: str = Field(".sluice/checkpoints", description="Directory; one file per job and run id.")


class LocalCheckpointStore(CheckpointStore):
    """``{path}/{job}/{run_id}.json`` holding every partition's state."""

    type = "local"
    Config = LocalCheckpointsConfig
    config: LocalCheckpointsConfig

    def __init__(self, config: LocalCheckpointsConfig) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}

    def _file(self, job: str, run_id: str) -> Path:
        return Path(self.config.path) / safe_key(job) / f"{safe_key(run_id)}.json"

    def load(self, job: str, run_id: str) -> dict[str, dict[str, Any]]:
        path = self._file(job, run_id)
        with self._lock:
            data = orjson.loads(path.read_bytes()) if path.exists() else {}
            self._cache[(job, run_id)] = data
            return {k: dict(v) for k, v in data.items()}

    def save(self, job: str, run_id: str, partition: str, state: dict[str, Any]) -> None:
        path = self._file(job, run_id)
        with self._lock:
            data = self._cache.setdefault((job, run_id), {})
            data[partition] = state
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(orjson.dumps(data))
            os.replace(tmp, path)  # atomic: a crash leaves the old file or the new one

    def clear(self, job: str, run_id: str) -> None:
        with self._lock:
            self._cache.pop((job, run_id), None)
            self._file(job, run_id).unlink(missing_ok=True)
