"""A streamed S3 object that survives dropped connections: a read that fails mid-body re-opens the
object with a ``Range`` from the byte reached (pinned to the same ETag), so the decompressor and
line parser above it never notice. The object is never held in memory whole.
"""

from __future__ import annotations

import io
from typing import Any

from sluice import RunContext, TransientError
from sluice.retry import retry_call

from .client import S3Connection, call, is_transient

BUFFER = 1 << 20


class ObjectStream(io.RawIOBase):
    """Raw, resumable byte stream of ``s3://bucket/key``; wrap it with ``open_object``."""

    def __init__(self, client: Any, conn: S3Connection, bucket: str, key: str, ctx: RunContext) -> None:
        super().__init__()
        self.client, self.conn, self.bucket, self.key, self.ctx = client, conn, bucket, key, ctx
        self.pos = 0
        self.size: int | None = None
        self.etag: str | None = None
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        def get() -> Any:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
            if self.pos:
                kwargs["Range"] = f"bytes={self.pos}-"
            if self.etag:
                kwargs["IfMatch"] = self.etag  # a changed object must not be stitched to the old one
            return call(lambda: self.client.get_object(**kwargs), "reading", self.conn, self.bucket, self.key)

        resp = retry_call(get, self.ctx.retry, retry_on=is_transient, metrics=self.ctx.metrics)
        if self.etag is None:
            self.etag = resp.get("ETag")
            self.size = int(resp.get("ContentLength") or 0)
        self._body = resp["Body"]

    def readinto(self, buffer: Any) -> int:
        if self.size is not None and self.pos >= self.size:
            return 0
        attempt = 0
        while True:
            if self._body is None:
                self._open()
                if self.size == 0:
                    return 0
            try:
                data = self._body.read(len(buffer))
            except Exception as exc:
                # a dropped connection or truncated body: re-open from self.pos, as the retry policy allows
                self._close_body()
                attempt += 1
                if attempt >= self.ctx.retry.attempts:
                    raise TransientError(f"s3: reading s3://{self.bucket}/{self.key} failed at byte {self.pos} "
                                         f"after {attempt} attempts: {type(exc).__name__}: {exc}") from exc
                self.ctx.metrics.add("retries")
                continue
            n = len(data)
            if n == 0 and self.size is not None and self.pos < self.size:
                self._close_body()  # the stream ended early without an error: resume it
                attempt += 1
                if attempt >= self.ctx.retry.attempts:
                    raise TransientError(f"s3: reading s3://{self.bucket}/{self.key}: stream ended at byte "
                                         f"{self.pos} of {self.size}")
                self.ctx.metrics.add("retries")
                continue
            buffer[:n] = data
            self.pos += n
            return n

    def _close_body(self) -> None:
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # closing a broken connection may fail again; it is being dropped anyway
                pass
            self._body = None

    def close(self) -> None:
        self._close_body()
        super().close()


def open_object(client: Any, conn: S3Connection, bucket: str, key: str, ctx: RunContext) -> io.BufferedReader:
    """A buffered, resumable reader of one object (compressed bytes as stored)."""
    return io.BufferedReader(ObjectStream(client, conn, bucket, key, ctx), buffer_size=BUFFER)
