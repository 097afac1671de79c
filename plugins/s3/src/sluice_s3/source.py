"""The S3 source: objects under a prefix in any format (JSON Lines by default), read in parallel
partitions (key ranges).

A partition is a small descriptor ``{start_after, last_key}``; ``read()`` lists its own range again
with the same filters, so millions of keys are never held in memory. Records of consecutive small
objects share batches. The checkpoint names the last object touched and the format's position in it
(``{"key", "line"}`` for text formats, ``{"key", "row_group", "offset"}`` for Parquet; ``"done":
true`` once it was read to the end): resume skips finished objects and continues inside a half-read
one. Text formats are streamed through the decompressor; Parquet is read with ranged GETs.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from sluice import Batch, DeadLetter, Partition, PermanentError, RunContext, Source
from sluice.codecs import Compression, detect, open_reader
from sluice.formats import Chunk, FormatOption, check_compression
from sluice.retry import retry_call

from .client import S3Connection, S3Uri, call, is_transient, make_client, parse_uri
from .listing import KeyFilter, KeyRange, glob_regex, group_keys, list_objects
from .reader import RangedObject, open_object


class S3SourceConfig(S3Connection):
    """Where and what to read."""

    uri: S3Uri = Field(description="s3://bucket/prefix: the folder to read (recursively); templated.")
    glob: str | None = Field(
        None, description="Keys to read, relative to the prefix: ** crosses folders (e.g. **/*.jsonl.gz). "
                          "Default: every key whose name does not start with _ or . (skips _SUCCESS, manifests)."
    )
    modified_since: datetime | None = Field(
        None, description="Only objects last modified at or after this ISO time (templated, e.g. {{ ts }})."
    )
    modified_until: datetime | None = Field(
        None, description="Only objects last modified before this ISO time (templated, e.g. {{ data_interval_end }})."
    )
    format: FormatOption = Field(
        "jsonl", validate_default=True,
        description="Object format: jsonl (JSON Lines, default), or parquet, csv, tsv with sluice-formats; a name "
                    "or a block with the format's options (format: {type: csv, delimiter: ';'})."
    )
    compression: Literal["auto", "none", "gzip", "zstd"] = Field(
        "auto", description="auto: by key extension (.gz/.gzip gzip, .zst/.zstd zstd, otherwise none); text "
                            "formats only."
    )
    keys_per_partition: int = Field(
        1000, ge=1, description="At most this many objects per partition (one listing page: each partition lists "
                                "its range again when it is read)."
    )
    bytes_per_partition: int = Field(
        256 << 20, ge=1, description="Close a partition once its objects reach this many bytes (stored size)."
    )
    prefetch_objects: int = Field(
        4, ge=0, description="Small objects fetched ahead in parallel per partition (hides request latency "
                             "with many small objects); 0: one object after the other."
    )
    prefetch_max_bytes: int = Field(
        4 << 20, ge=0, description="Objects up to this size are fetched whole, ahead; larger ones are streamed."
    )
    on_corrupt_object: Literal["fail", "dead_letter"] = Field(
        "fail", description="A corrupt or truncated object (compressed text, a cut Parquet file): fail the run "
                            "naming the key (after delivering the records before the damage), or dead-letter it "
                            "and go on."
    )


    @field_validator("modified_since", "modified_until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class S3Source(Source):
    """Reads objects under an S3 prefix in parallel key ranges: JSON Lines (plain, .gz, .zst) by
    default, or any format a plugin provides (``format: parquet``, ``csv``, ``tsv``)."""

    type = "s3"
    Config = S3SourceConfig
    config: S3SourceConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self.bucket, prefix = parse_uri(self.config.uri)
        self.prefix = f"{prefix}/" if prefix else ""
        check_compression(self.config.format, self.config.compression, "s3 source")
        self.client = make_client(self.config, ctx.metrics)
        c = self.config
        self.accept = KeyFilter(self.prefix, glob_regex(c.glob) if c.glob else None, c.modified_since,
                                c.modified_until)

    def describe(self) -> str:
        return self.config.uri

    # -- listing ------------------------------------------------------------------------------
    def _objects(self, start_after: str = "") -> Iterator[dict[str, Any]]:
        def page(token: str | None) -> dict[str, Any]:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = start_after

            def list_once() -> dict[str, Any]:
                return call(lambda: self.client.list_objects_v2(**kwargs), "listing", self.config, self.bucket,
                            self.prefix or None)

            return retry_call(list_once, self.ctx.retry, retry_on=is_transient, metrics=self.ctx.metrics)

        return list_objects(page)

    def partitions(self) -> list[Partition]:
        c = self.config
        ranges = group_keys(self._objects(), self.accept, c.keys_per_partition, c.bytes_per_partition)
        return [_partition(i, r) for i, r in enumerate(ranges)]

    def _listed(self, spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The partition's objects, listed again from its range with the same filters."""
        last = spec["last_key"]
        for obj in self._objects(spec["start_after"]):
            if obj["Key"] > last:
                return
            if self.accept(obj):
                yield obj

    def _prefetched(self, objects: Iterator[dict[str, Any]]) -> Iterator[tuple[str, Future[bytes] | None]]:
        """``(key, fetch)`` in key order; small objects are already being fetched, up to
        ``prefetch_objects`` ahead (``fetch`` None: stream the object)."""
        window, small = self.config.prefetch_objects, self.config.prefetch_max_bytes
        if window == 0:
            yield from ((obj["Key"], None) for obj in objects)
            return
        pool = ThreadPoolExecutor(window, thread_name_prefix="sluice-s3-get")
        ahead: deque[tuple[str, Future[bytes] | None]] = deque()
        try:
            for obj in objects:
                key = obj["Key"]
                ahead.append((key, pool.submit(self._fetch, key) if int(obj.get("Size") or 0) <= small else None))
                if len(ahead) > window:
                    yield ahead.popleft()
            while ahead:
                yield ahead.popleft()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, key: str) -> bytes:
        def get() -> bytes:
            return call(lambda: self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read(), "reading",
                        self.config, self.bucket, key)

        return retry_call(get, self.ctx.retry, retry_on=is_transient, metrics=self.ctx.metrics)

    # -- reading ------------------------------------------------------------------------------
    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        size = self.ctx.runtime.batch_size
        cp = checkpoint or {}
        resume_key, resume_done = cp.get("key"), bool(cp.get("done"))
        resume_at = {k: v for k, v in cp.items() if k not in ("key", "done")} or None
        spec = partition.spec
        if resume_key is not None and not spec["start_after"] < resume_key <= spec["last_key"]:
            # partitions are ranges of the listing: if it changed, this checkpoint belongs to other work
            raise PermanentError(f"s3 source: the checkpoint of partition {partition.key!r} (s3://{self.bucket}/"
                                 f"{resume_key}) is outside its key range now: the listing changed since the "
                                 "failed run; run again without --resume (or bound the listing with modified_until)")
        todo = (obj for obj in self._listed(spec)
                if resume_key is None or obj["Key"] > resume_key or (obj["Key"] == resume_key and not resume_done))
        objects = self._prefetched(todo)
        try:
            yield from self._batches(objects, resume_key, resume_at, size)
        finally:
            objects.close()  # stops fetching ahead when the run stops early

    def _batches(self, objects: Iterator[tuple[str, Future[bytes] | None]], resume_key: str | None,
                 resume_at: dict[str, Any] | None, size: int) -> Iterator[Batch]:
        records: list[Any] = []
        dead: list[DeadLetter] = []
        position: dict[str, Any] | None = None
        for key, fetch in objects:
            start = resume_at if key == resume_key else None
            for chunk in self._read_object(key, start, size, fetch):
                if len(records) + len(dead) + len(chunk.records) + len(chunk.dead_letters) > size and (records or dead):
                    yield Batch(records, checkpoint=position, dead_letters=dead)
                    records, dead = [], []
                records.extend(chunk.records)
                dead.extend(chunk.dead_letters)
                position = {"key": key, **chunk.position}
                if chunk.damage is not None:
                    damage = self._damage(key, chunk)
                    if self.config.on_corrupt_object == "fail":
                        if records or dead:  # deliver every whole record before the damage, then stop
                            yield Batch(records, checkpoint=position, dead_letters=dead)
                        raise PermanentError(damage)
                    where = {"bucket": self.bucket, "key": key, **chunk.position}
                    dead.append(DeadLetter(record=where, reason=damage, error_type="CorruptObject",
                                           context=dict(where)))
            if position is not None and position["key"] == key:
                position["done"] = True  # read to the end: a resume skips this object
        if records or dead:
            yield Batch(records, checkpoint=position, dead_letters=dead)

    def _damage(self, key: str, chunk: Chunk) -> str:
        fmt, exc = self.config.format, chunk.damage
        kind = self._compression(key) if fmt.text else fmt.type
        return (f"s3 source: s3://{self.bucket}/{key} is corrupt or truncated after {fmt.describe(chunk.position)} "
                f"({kind}): {type(exc).__name__}: {exc}")

    def _compression(self, key: str) -> Compression:
        mode = self.config.compression
        return detect(key) if mode == "auto" else mode

    def _read_object(self, key: str, position: dict[str, Any] | None, size: int,
                     fetch: Future[bytes] | None) -> Iterator[Chunk]:
        """Chunks of one object from ``position``; the last one carries the damage when the object
        turned out corrupt or truncated. Text formats get the decompressed stream; binary formats
        (Parquet) a seekable file: the bytes fetched ahead, or ranged reads of a larger object."""
        fmt = self.config.format
        where = {"bucket": self.bucket, "key": key}
        if fmt.text:
            source: Any = io.BytesIO(fetch.result()) if fetch is not None else open_object(
                self.client, self.config, self.bucket, key, self.ctx)
            with source as raw:
                yield from fmt.read(open_reader(raw, self._compression(key)), position=position, batch_size=size,
                                    where=where)
            return
        source = io.BytesIO(fetch.result()) if fetch is not None else RangedObject(
            self.client, self.config, self.bucket, key, self.ctx)
        with source as raw:
            yield from fmt.read(raw, position=position, batch_size=size, where=where)


def _partition(index: int, r: KeyRange) -> Partition:
    # the index keeps keys short and readable in output names; the range makes the work explicit
    return Partition(key=f"keys-{index:05d}", spec={"start_after": r.start_after, "last_key": r.last_key,
                                                    "objects": r.keys, "bytes": r.bytes})


__all__ = ["S3Source", "S3SourceConfig"]
