"""One output object being written: compressed incrementally, sent as a single PUT when small, or
streamed through a multipart upload whose parts go up in parallel on a bounded thread pool.

Memory stays bounded: an object buffers at most ``multipart_threshold`` compressed bytes before its
multipart upload starts, and the pool admits at most ``max_parts_in_flight`` parts at once
(submitting more blocks the writer: backpressure).
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sluice import DeadLetter, PermanentError, RunContext
from sluice.codecs import Compressor
from sluice.formats import FormatWriter
from sluice.retry import retry_call

from .client import S3Connection, call, is_transient

CONTENT_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd"}  # else: the format's content type


class PartPool:
    """Threads uploading multipart parts; at most ``max_in_flight`` parts are held at once."""

    def __init__(self, threads: int, max_in_flight: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sluice-s3-upload")
        self.slots = threading.BoundedSemaphore(max_in_flight)

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        self.slots.acquire()
        try:
            future = self.executor.submit(fn, *args)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self.slots.release())
        return future

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class Target:
    """What every object of one sink shares: client, bucket, retry context and upload tuning."""

    client: Any
    conn: S3Connection
    bucket: str
    ctx: RunContext
    pool: PartPool
    content_type: str
    multipart_threshold: int
    part_size: int

    def retry(self, fn: Any, what: str, key: str) -> Any:
        """``fn()`` with S3 errors translated and transient ones retried per the run's policy."""
        return retry_call(lambda: call(fn, what, self.conn, self.bucket, key), self.ctx.retry, retry_on=is_transient,
                          metrics=self.ctx.metrics)


@dataclass
class ObjectWriter:
    """An output object being written; ``close()`` makes it durable and returns its manifest entry."""

    target: Target
    key: str
    seq: int
    compressor: Compressor
    records: int = 0
    size: int = 0  # compressed bytes so far (buffered and uploaded)
    buffer: bytearray = field(default_factory=bytearray)
    sha256: Any = field(default_factory=hashlib.sha256)
    upload_id: str | None = None
    parts: list[Future[dict[str, Any]]] = field(default_factory=list)
    encoder: FormatWriter | None = None  # the file's format: records in, the file's bytes out

    def write(self, records: list[dict[str, Any]]) -> list[DeadLetter]:
        """Encode ``records`` in the file's format and add them; returns the records it refused.
        ``Rollover`` from the format passes through before anything was taken."""
        assert self.encoder is not None
        data, dead = self.encoder.add(records)
        self.add(data, len(records) - len(dead))
        return dead

    def add(self, data: bytes, records: int) -> None:
        """Compress and buffer ``data`` (the encoded bytes of ``records`` records), uploading full parts."""
        self._append(self.compressor.compress(data))
        self.records += records
        t = self.target
        if self.upload_id is None and len(self.buffer) >= t.multipart_threshold:
            self.upload_id = t.retry(lambda: t.client.create_multipart_upload(
                Bucket=t.bucket, Key=self.key, ContentType=t.content_type)["UploadId"],
                "starting a multipart upload of", self.key)
        if self.upload_id is not None:
            while len(self.buffer) >= t.part_size:
                self._send_part(bytes(self.buffer[: t.part_size]))
                del self.buffer[: t.part_size]
            self._raise_failed_parts()

    def _append(self, chunk: bytes) -> None:
        if chunk:
            self.buffer += chunk
            self.sha256.update(chunk)
            self.size += len(chunk)

    def _send_part(self, data: bytes) -> None:
        number = len(self.parts) + 1
        self.parts.append(self.target.pool.submit(self._upload_part, number, data))

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        t = self.target
        resp = t.retry(lambda: t.client.upload_part(Bucket=t.bucket, Key=self.key, UploadId=self.upload_id,
                                                    PartNumber=number, Body=data), f"uploading part {number} of",
                       self.key)
        return {"PartNumber": number, "ETag": resp["ETag"]}

    def _raise_failed_parts(self) -> None:
        for part in self.parts:
            if part.done() and part.exception() is not None:
                raise part.exception()  # type: ignore[misc]

    def close(self) -> dict[str, Any]:
        """Finish the format, flush the compressor and upload what is left; returns ``{key, records,
        bytes, sha256, etag}``."""
        if self.encoder is not None:
            tail = self.encoder.finish()
            if tail:
                self._append(self.compressor.compress(tail))
        self._append(self.compressor.flush())
        t = self.target
        sha = self.sha256.hexdigest()
        if self.upload_id is None:
            body = bytes(self.buffer)
            resp = t.retry(lambda: t.client.put_object(
                Bucket=t.bucket, Key=self.key, Body=body, ContentType=t.content_type,
                Metadata={"records": str(self.records), "sha256": sha}), "writing", self.key)
        else:
            if self.buffer or not self.parts:
                self._send_part(bytes(self.buffer))
            self.buffer = bytearray()
            parts = [f.result() for f in self.parts]
            resp = self._complete(parts)
        self.buffer = bytearray()
        return {"key": self.key, "records": self.records, "bytes": self.size, "sha256": sha,
                "etag": str(resp.get("ETag", "")).strip('"')}

    def _complete(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        t = self.target
        attempts = 0

        def complete() -> dict[str, Any]:
            nonlocal attempts
            attempts += 1
            try:
                return call(lambda: t.client.complete_multipart_upload(
                    Bucket=t.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}),
                    "completing the multipart upload of", t.conn, t.bucket, self.key)
            except PermanentError:
                # a retried Complete whose first attempt did succeed finds the upload gone: the object
                # with one ETag per part count is the proof it is there
                if attempts > 1:
                    head = call(lambda: t.client.head_object(Bucket=t.bucket, Key=self.key), "checking", t.conn,
                                t.bucket, self.key)
                    if str(head.get("ETag", "")).strip('"').endswith(f"-{len(parts)}"):
                        return head
                raise

        resp = retry_call(complete, t.ctx.retry, retry_on=is_transient, metrics=t.ctx.metrics)
        self.upload_id = None
        return resp

    def abort(self) -> None:
        """Drop the buffer and abort the multipart upload, if one was started (best effort)."""
        self.buffer = bytearray()
        for part in self.parts:
            part.cancel()
        upload_id, self.upload_id = self.upload_id, None
        if upload_id is not None:
            for part in self.parts:
                if not part.cancelled():
                    try:
                        part.result()
                    except Exception:  # the part failed: nothing to wait for
                        pass
            t = self.target
            t.retry(lambda: t.client.abort_multipart_upload(Bucket=t.bucket, Key=self.key, UploadId=upload_id),
                    "aborting the multipart upload of", self.key)
