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


class RangedObject(io.RawIOBase):
    """Random access to ``s3://bucket/key`` through ranged GETs, pinned to the object's ETag.

    For formats that read a file out of order (Parquet: the footer first, then the column chunks of
    one row group at a time): each read is one ``Range`` request, retried under ``runtime.retry``,
    so only the bytes asked for are ever in memory. Small reads are served from one cached block.
    """

    BLOCK = 64 << 10

    def __init__(self, client: Any, conn: S3Connection, bucket: str, key: str, ctx: RunContext) -> None:
        super().__init__()
        self.client, self.conn, self.bucket, self.key, self.ctx = client, conn, bucket, key, ctx
        head = self._retry(lambda: self.client.head_object(Bucket=bucket, Key=key), "checking")
        self.size = int(head.get("ContentLength") or 0)
        self.etag = head.get("ETag")
        self.pos = 0
        self._cache_at, self._cache = 0, b""
        self.requests = 0

    def _retry(self, fn: Any, what: str) -> Any:
        return retry_call(lambda: call(fn, what, self.conn, self.bucket, self.key), self.ctx.retry,
                          retry_on=is_transient, metrics=self.ctx.metrics)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _get(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``; the whole body is read inside the retried call, so a connection
        dropped mid-body is retried like any other transient failure."""
        def get() -> bytes:
            self.requests += 1
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}",
                                          IfMatch=self.etag)
            data = resp["Body"].read()
            if len(data) != end - start:
                raise TransientError(f"s3: reading s3://{self.bucket}/{self.key}: got {len(data)} of "
                                     f"{end - start} bytes at {start}")
            return data

        return self._retry(get, "reading")

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        if end <= self.pos:
            return b""
        start = self.pos
        cached_end = self._cache_at + len(self._cache)
        if self._cache_at <= start and end <= cached_end:
            data = self._cache[start - self._cache_at:end - self._cache_at]
        elif end - start >= self.BLOCK:
            data = self._get(start, end)  # a column chunk: exactly what was asked for
        else:
            block_end = min(self.size, start + self.BLOCK)
            self._cache_at, self._cache = start, self._get(start, block_end)
            data = self._cache[: end - start]
        self.pos = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)
