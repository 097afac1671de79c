"""Staging on S3: a staged run's record batches, manifests and checkpoints as objects under one
prefix, so the steps of a run can hand each other data from any machine.

Every ``put`` is one PutObject, atomic as the staged path needs. Record batches are stored zstd
compressed: bytes cost time on S3, CPU for zstd hardly any. The connection comes from
``staging.options`` or, when there are none, from the job's first S3 component.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sluice import ConfigError, PermanentError
from sluice.errors import format_validation_error
from sluice.retry import retry_call
from sluice.staging import StagingStore

from .client import S3Connection, call, is_transient, join_key, make_client, parse_uri
from .listing import objects_under

if TYPE_CHECKING:
    from sluice.config import Job
    from sluice.context import RunContext

DELETE_CHUNK = 1000  # DeleteObjects takes at most this many keys


class S3StagingStore(StagingStore):
    """Bytes under keys below ``s3://bucket/prefix``; transient S3 errors are retried per ``runtime.retry``."""

    compression = "zstd"

    def __init__(self, uri: str, conn: S3Connection, ctx: RunContext) -> None:
        self.bucket, self.prefix = parse_uri(uri)
        self.conn = conn
        self.ctx = ctx
        self.client = make_client(conn, ctx.metrics)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"staging key {key!r} leaves the staging root")
        return join_key(self.prefix, key)

    def _call(self, fn: Any, what: str, key: str | None) -> Any:
        return retry_call(lambda: call(fn, what, self.conn, self.bucket, key), self.ctx.retry,
                          retry_on=is_transient, metrics=self.ctx.metrics)

    def put(self, key: str, data: bytes) -> None:
        full = self._key(key)
        self._call(lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data), "staging", full)

    def get(self, key: str) -> bytes | None:
        found = self.get_versioned(key)
        return None if found is None else found[0]

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        full = self._key(key)

        def fetch() -> tuple[bytes, str] | None:
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=full)
            except Exception as exc:
                if _missing(exc):
                    return None
                raise
            return resp["Body"].read(), str(resp.get("ETag") or "")

        return self._call(fetch, "reading staged", full)  # type: ignore[no-any-return]

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        """A conditional PutObject: ``If-None-Match: *`` (absent) or ``If-Match: <etag>``."""
        full = self._key(key)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}

        def put() -> bool:
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
            except Exception as exc:
                if _lost_race(exc) or (version is not None and _missing(exc)):  # changed or removed meanwhile
                    return False
                raise
            return True

        return self._call(put, "writing staged", full)  # type: ignore[no-any-return]

    def list(self, prefix: str) -> list[str]:
        folder = self._key(prefix.strip("/"))
        folder = f"{folder}/" if folder else ""
        root = f"{self.prefix}/" if self.prefix else ""
        objects = objects_under(self.client, self.bucket, folder, self._call, "listing staging in")
        return sorted(o["Key"][len(root):] for o in objects if not o["Key"].endswith("/"))

    def delete(self, keys: Iterable[str]) -> None:
        full = [self._key(k) for k in keys]
        for start in range(0, len(full), DELETE_CHUNK):
            chunk = [{"Key": k} for k in full[start:start + DELETE_CHUNK]]
            resp = self._call(lambda c=chunk: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": c, "Quiet": True}), "deleting staging in", self.prefix or None)
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise PermanentError(f"s3 staging: cannot delete s3://{self.bucket}/{first.get('Key')}: "
                                     f"{first.get('Code')} {first.get('Message', '')}".rstrip())

    def close(self) -> None:
        self.client.close()


def _missing(exc: BaseException) -> bool:
    """A GetObject error that means "no such key" (404 without a body on some S3-compatible stores)."""
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket")


def _lost_race(exc: BaseException) -> bool:
    """A conditional write refused because someone else wrote first (412, or 409 while racing)."""
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def connection_of(options: dict[str, Any], job: Job) -> S3Connection:
    """The staging connection: ``staging.options`` when given, else the S3 connection fields of the
    job's first S3 component (destination, source, dead letters), else the AWS default chain."""
    if options:
        try:
            return S3Connection.model_validate(options)
        except ValidationError as exc:
            raise format_validation_error(exc, f"job {job.name!r}: staging.options") from None
    for spec in (job.destination, job.source, job.dead_letter):
        if isinstance(spec.config, S3Connection):
            return S3Connection(**{name: getattr(spec.config, name) for name in S3Connection.model_fields})
    return S3Connection()


def open_staging_store(uri: str, options: dict[str, Any], job: Job, ctx: RunContext) -> S3StagingStore:
    """The S3 staging store for ``uri`` (``s3://bucket/prefix``)."""
    try:
        parse_uri(uri)
    except ValueError as exc:
        raise ConfigError(f"job {job.name!r}: staging.uri: {exc}") from None
    return S3StagingStore(uri, connection_of(options, job), ctx)
