"""Staging stores: where the steps of a staged run hand each other records, manifests and
checkpoints.

A store is a small key → bytes store under one root (a local directory here; an S3 prefix in
sluice-s3, through the ``sluice_staging_store`` hook). Keys are ``/``-separated paths. Every
``put`` is atomic (a reader sees the old value or the new one), which is all the staged path
needs: each record batch, manifest and checkpoint is one object.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from .codecs import Compression
from .errors import ConfigError, PermanentError

if TYPE_CHECKING:
    from .config import Job
    from .context import RunContext


class StagingStore:
    """Bytes under keys, for one staging root. Subclasses retry transient errors themselves.

    ``compression`` is how staged record batches are stored: none on a local disk (cheapest in
    CPU), zstd where bytes cost time (S3).
    """

    compression: ClassVar[Compression] = "none"

    def describe(self) -> str:
        """The root, for messages (never with credentials)."""
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing it atomically."""
        raise NotImplementedError

    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``; None when there are none."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Every key under the folder ``prefix`` (recursively), sorted."""
        raise NotImplementedError

    def delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys`` (missing ones are fine)."""
        raise NotImplementedError

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under the folder ``prefix``."""
        self.delete(self.list(prefix))

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes under ``key`` and a version token for ``put_if``; None when there are none."""
        raise NotImplementedError(f"staging store {type(self).__name__} cannot hold leases")

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Store ``data`` only if ``key`` is still at ``version`` (None: only if absent); atomic
        against other writers. False when someone else wrote first."""
        raise NotImplementedError(f"staging store {type(self).__name__} cannot hold leases")

    def close(self) -> None:
        """Release clients and connections."""

    # -- JSON documents (manifests) -----------------------------------------------------------
    def put_json(self, key: str, data: Any) -> None:
        self.put(key, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PermanentError(f"staging: {self.describe()}/{key} is damaged: {exc}") from None


class LocalStagingStore(StagingStore):
    """Staging in a local directory: for one machine, or a folder every worker mounts."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"staging key {key!r} leaves the staging root")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic on one filesystem

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith("."))

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        data = self.get(key)
        return None if data is None else (data, hashlib.sha256(data).hexdigest())

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # an advisory lock beside the key serialises compare-and-write across processes and threads
        with open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = self.get_versioned(key)
                if (current[1] if current else None) != version:
                    return False
                self.put(key, data)
                return True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(uri: str, options: dict[str, Any], job: Job, ctx: RunContext) -> StagingStore:
    """The staging store for ``uri``, from the first plugin that serves its scheme."""
    assert job.registry is not None
    store = job.registry.hook().sluice_staging_store(uri=uri, options=options, job=job, ctx=ctx)
    if store is None:
        raise ConfigError(f"job {job.name!r}: staging.uri {uri!r}: no installed plugin stores staging there "
                          "(s3:// needs sluice-s3)")
    return store  # type: ignore[no-any-return]


def local_store(uri: str, options: dict[str, Any]) -> StagingStore | None:
    """Core's store: a local directory (a plain path or ``file://``); None for other schemes."""
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif "://" in uri:
        return None
    if options:
        raise ConfigError(f"staging.options {sorted(options)}: a local staging directory takes no options")
    return LocalStagingStore(uri)
