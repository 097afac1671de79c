"""The S3 sink (also the S3 dead-letter store): deterministic keys, rollover, multipart, manifest,
in any format (JSON Lines by default; ``format: parquet``, ``csv``, ``tsv`` with sluice-formats).

Keys come from the job, the data interval, the source partition and the engine's batch sequence
(of the first batch in the file), never the clock: a re-run or a resumed run rewrites the same
keys. The sink is two-phase (see ``sluice.components.Sink``): ``start_partition`` replaces what an
earlier attempt wrote for a partition, ``commit(run)`` lists the run's folder, so a fresh instance
in another process can prune partitions the run no longer has and write ``_manifest.json`` and then
``_SUCCESS``; ``abort(run)`` aborts this instance's uploads and withdraws both.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
from pydantic import Field

from sluice import Batch, ConfigError, DeadLetter, PermanentError, RunContext, Sink, SinkRun, SluiceError, WriteResult
from sluice.codecs import EXTENSIONS, Compression, compressor, open_reader
from sluice.formats import FormatOption, Rollover, check_compression
from sluice.records import safe_key

from .client import S3Connection, S3Uri, make_client, parse_uri
from .layout import MISSING, Folders, KeyLayout, PartitionBy
from .listing import objects_under
from .reader import RangedObject, open_object
from .upload import CONTENT_TYPES, ObjectWriter, PartPool, Target

MiB = 1 << 20
# the format's extension (.jsonl, .parquet...) and then the compression's (.gz, .zst) follow
DATA_KEY = "{prefix}/date={{ ds }}/run_id={{ run_id }}/part-{partition}-{seq:05d}"
DEAD_LETTER_KEY = "{prefix}/date={{ ds }}/run_id={{ run_id }}/dead-letters-{partition}-{seq:05d}"


class S3SinkConfig(S3Connection):
    """Where and how to write objects."""

    uri: S3Uri = Field(description="s3://bucket/prefix: where output goes ({prefix} in the key template).")
    key: str | None = Field(
        None, description="Key template. Jinja ({{ ds }}, {{ run_id }}...) is rendered once; {prefix}, "
                          "{partition}, {seq:05d} and {partition_by} are filled per file. Default: "
                          "{prefix}/date={{ ds }}/run_id={{ run_id }}/part-{partition}-{seq:05d} + the format's "
                          "extension + the compression's (dead letters: dead-letters-… instead of part-…)."
    )
    format: FormatOption = Field(
        "jsonl", validate_default=True,
        description="Object format: jsonl (JSON Lines, default), or parquet, csv, tsv with sluice-formats; a name "
                    "or a block with the format's options (format: {type: parquet, compression: snappy})."
    )
    compression: Compression = Field("gzip", description="gzip (default), zstd or none; text formats only (Parquet "
                                                         "compresses inside: set it in the format block).")
    compression_level: int | None = Field(None, description="gzip 1-9 (default 6), zstd 1-22 (default 3).")
    partition_by: PartitionBy | None = Field(None, description="Hive-style folders {name}={value} from a field.")
    max_records_per_file: int = Field(
        1_000_000, ge=1, description="Start a new file once a file holds this many records (checked after each batch)."
    )
    max_bytes_per_file: int = Field(
        1024 * MiB, ge=1, description="Start a new file once a file holds this many compressed bytes (checked after "
                                      "each batch)."
    )
    max_open_files: int = Field(
        64, ge=1, description="With partition_by: files open at once per source partition; the oldest is closed "
                              "beyond it (bounds memory when records span many folders)."
    )
    multipart_threshold: int = Field(
        16 * MiB, ge=5 * MiB, description="A file whose compressed size reaches this streams through a multipart "
                                          "upload; smaller files are one PUT."
    )
    multipart_part_size: int = Field(8 * MiB, ge=5 * MiB, description="Multipart part size (S3 minimum: 5 MiB).")
    upload_threads: int = Field(8, ge=1, description="Threads uploading multipart parts (shared by partitions).")
    max_parts_in_flight: int = Field(
        8, ge=1, description="Parts buffered or uploading at once; memory is about this times the part size."
    )
    overwrite: bool = Field(
        True, description="Commit removes files of partitions the run no longer has (an earlier attempt's, "
                          "when the source's partitioning changed); false: leave them (a folder several jobs "
                          "share). A partition written again always replaces its own files."
    )
    manifest: str | None = Field(
        "_manifest.json", description="Manifest object name, written at commit in the run's output folder "
                                      "(dead letters: _dead_letters_manifest.json); null: none."
    )
    success_marker: str | None = Field(
        "_SUCCESS", description="Marker written last at commit (dead letters: none); null: none."
    )
    markers_when_empty: bool = Field(True, description="Write manifest and marker even when nothing was written.")



class S3Sink(Sink):
    """Writes objects to S3 under deterministic keys: JSON Lines (gzip, zstd or plain) by default,
    or any format a plugin provides (Parquet, CSV, TSV), with optional hive partitioning, rollover,
    multipart uploads, a manifest and a _SUCCESS marker.

    As ``dead_letter: {type: s3}`` it stores dead letters as ``dead-letters-*.jsonl.gz``.
    """

    type = "s3"
    Config = S3SinkConfig
    config: S3SinkConfig

    def open(self, ctx: RunContext) -> None:
        """Connect and check the bucket; nothing is deleted here (that is ``start_partition``'s job)."""
        super().open(ctx)
        c = self.config
        self.dead_letter_store = ctx.sink_role == "dead_letters"
        self.bucket, prefix = parse_uri(c.uri)
        self.format = c.format
        if "compression" in c.model_fields_set:
            check_compression(self.format, c.compression, "s3 sink")
        if self.dead_letter_store and self.format.type != "jsonl":
            raise ConfigError(f"s3 sink: dead letters are stored as JSON Lines, not {self.format.type} (leave format "
                              "out of the dead_letter block)")
        self.compression: Compression = c.compression if self.format.text else "none"
        default_key = DEAD_LETTER_KEY if self.dead_letter_store else DATA_KEY
        template = c.key or default_key + self.format.extension + EXTENSIONS[self.compression]
        where = "dead_letter.key" if self.dead_letter_store else "destination.key"
        self.layout = KeyLayout.parse(ctx.render(template, where), prefix, c.partition_by is not None)
        if self.dead_letter_store:
            self.manifest_name = "_dead_letters_manifest.json" if c.manifest == "_manifest.json" else c.manifest
            self.marker_name = None if c.success_marker == "_SUCCESS" else c.success_marker
            self.markers_when_empty = False
        else:
            self.manifest_name, self.marker_name = c.manifest, c.success_marker
            self.markers_when_empty = c.markers_when_empty
        self.folders = Folders(c.partition_by) if c.partition_by else None
        # a field whose value is the folder itself (hive `app=web`): a columnar format may leave it out
        by = c.partition_by
        self.partition_column = by.field if by and by.format == "value" and self.folders and \
            self.folders.name == by.field else None
        self._state: dict[tuple[str, str], Any] = {}  # (partition, folder) -> format state for its next file
        self.client = make_client(c, ctx.metrics)
        self.pool = PartPool(c.upload_threads, c.max_parts_in_flight)
        content_type = CONTENT_TYPES.get(self.compression, self.format.content_type)
        self.target = Target(self.client, c, self.bucket, ctx, self.pool, content_type,
                             c.multipart_threshold, c.multipart_part_size)
        self._lock = threading.Lock()
        self._open: dict[str, dict[str, ObjectWriter]] = {}  # partition -> folder -> open object
        self._closed: dict[str, dict[str, Any]] = {}  # key -> manifest entry, for files of this instance
        self._listing_lock = threading.Lock()
        self._earlier: dict[str, list[tuple[int, str]]] = {}  # safe partition -> (seq, key) of listed files
        self._listed = False
        self._check_bucket()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.layout.root}/"

    # -- writing ------------------------------------------------------------------------------
    def start_partition(self, partition: str, seq: int) -> None:
        """Delete the files an earlier attempt started for ``partition`` at batch ``seq`` or later:
        they are written again, maybe with other boundaries (rollover settings, folders). Done with
        ``overwrite: false`` too: they are this run's files of this partition, and leaving them would
        duplicate records."""
        key = safe_key(partition)
        with self._listing_lock:
            if not self._listed:  # one listing per instance serves every partition it starts
                objects = self._list(self._root_prefix())
                for obj in objects:
                    name, file_seq = self.layout.parts(obj["Key"]) or ("", 0)
                    self._earlier.setdefault(name, []).append((file_seq, obj["Key"]))
                self._listed = True
            stale = [k for file_seq, k in self._earlier.get(key, []) if file_seq >= seq]
        if stale:
            self._delete(stale)
            with self._listing_lock:  # only once deleted: a retried call after a failure deletes them again
                self._earlier[key] = [(s, k) for s, k in self._earlier[key] if s < seq]

    def write(self, batch: Batch) -> WriteResult:
        partition = batch.partition
        with self._lock:
            files = self._open.setdefault(partition, {})
        if not batch.records:
            return WriteResult(durable=not files)
        dead: list[DeadLetter] = []
        if self.folders is None:
            groups = {"": batch.records}
        else:
            groups, dead = self._group(batch.records)
        try:
            for folder, records in groups.items():
                writer = files.get(folder)
                if writer is None:
                    writer = files[folder] = self._start(partition, batch.seq, folder)
                try:
                    dead += writer.write(records)
                except Rollover:  # the file's schema cannot take these records: they start the next file
                    self._close(partition, files, folder)
                    writer = files[folder] = self._start(partition, batch.seq, folder)
                    dead += writer.write(records)
                if writer.records >= self.config.max_records_per_file or writer.size >= self.config.max_bytes_per_file:
                    self._close(partition, files, folder)
            while len(files) > self.config.max_open_files:
                self._close(partition, files, min(files, key=lambda f: files[f].seq))
        except Exception as exc:
            raise self._fail(partition, exc) from exc
        return WriteResult(written=len(batch.records) - len(dead), dead_letters=dead, durable=not files)

    def finish_partition(self, partition: str) -> WriteResult:
        with self._lock:
            files = self._open.get(partition) or {}
        try:
            for folder in sorted(files):
                self._close(partition, files, folder)
        except Exception as exc:
            raise self._fail(partition, exc) from exc
        return WriteResult()

    def _group(self, records: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[DeadLetter]]:
        assert self.folders is not None
        folder_of, missing_folder = self.folders.folder, self.folders.missing_folder
        to_dead = self.config.partition_by is not None and self.config.partition_by.missing == "dead_letter"
        groups: dict[str, list[dict[str, Any]]] = {}
        dead: list[DeadLetter] = []
        for record in records:
            folder = folder_of(record)
            if folder is None:
                if to_dead:
                    field = self.config.partition_by.field  # type: ignore[union-attr]
                    dead.append(DeadLetter(record, f"partition_by: field {field!r} is missing or not valid",
                                           "PartitionValueMissing", {"field": field}))
                    continue
                folder = missing_folder
            groups.setdefault(folder, []).append(record)
        return groups, dead

    def _start(self, partition: str, seq: int, folder: str) -> ObjectWriter:
        key = self.layout.key(safe_key(partition), seq, folder)
        encoder = self.format.writer(state=self._state.get((partition, folder)),
                                     partition_column=self.partition_column)
        return ObjectWriter(self.target, key, seq, compressor(self.compression, self.config.compression_level),
                            encoder=encoder)

    def _close(self, partition: str, files: dict[str, ObjectWriter], folder: str) -> None:
        writer = files[folder]
        entry = writer.close()
        del files[folder]
        with self._lock:
            self._closed[entry["key"]] = entry
            self._state[(partition, folder)] = writer.encoder.state if writer.encoder else None

    def _fail(self, partition: str, exc: Exception) -> SluiceError:
        """Discard the partition's open files: a retried write must not add its records twice.

        The checkpoint never passed the first batch of an open file, so ``--resume`` rewrites them.
        """
        with self._lock:
            files = self._open.pop(partition, {})
        for writer in files.values():
            try:
                writer.abort()
            except Exception as abort_exc:
                self.ctx.logger("s3").warning("aborting an upload failed", key=writer.key, error=str(abort_exc))
        reason = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
        return PermanentError(f"s3 sink: writing partition {partition!r} failed: {reason}")

    # -- run start and end --------------------------------------------------------------------
    def _check_bucket(self) -> None:
        # a one-key listing rather than HeadBucket: it works under a policy that allows s3:ListBucket
        # only for the output prefix, and still fails clearly on a missing bucket or bad credentials
        prefix = self._root_prefix()
        self.target.retry(lambda: self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1),
                          "opening", "")

    def _list(self, prefix: str) -> list[dict[str, Any]]:
        """Objects under ``prefix`` matching this run's layout."""
        match = self.layout.pattern.match
        return [o for o in objects_under(self.client, self.bucket, prefix, self.target.retry) if match(o["Key"])]

    def _root_prefix(self) -> str:
        return f"{self.layout.root}/" if self.layout.root else ""

    def _marker_keys(self) -> list[str]:
        return [f"{self._root_prefix()}{name}" for name in (self.marker_name, self.manifest_name) if name]

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
            chunk = [{"Key": k} for k in keys[start:start + 1000]]
            resp = self.target.retry(lambda c=chunk: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": c, "Quiet": True}), "deleting old output in", self.layout.root)
            if resp.get("Errors"):
                first = resp["Errors"][0]
                raise PermanentError(f"s3 sink: cannot delete s3://{self.bucket}/{first.get('Key')}: "
                                     f"{first.get('Code')} {first.get('Message', '')}".rstrip())

    def _abort_stale_uploads(self) -> None:
        """Multipart uploads of this run's keys left by a killed process cost storage until aborted."""
        match = self.layout.pattern.match
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._root_prefix()}
        while True:
            try:
                resp = self.target.retry(lambda kw=dict(kwargs): self.client.list_multipart_uploads(**kw),
                                         "listing multipart uploads in", kwargs["Prefix"])
            except PermanentError:
                return  # not allowed to list uploads: nothing we can clean up, and nothing to fail for
            for upload in resp.get("Uploads") or ():
                if match(upload["Key"]):
                    self.target.retry(lambda u=upload: self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]), "aborting an old upload of",
                        upload["Key"])
            if not resp.get("IsTruncated"):
                return
            kwargs["KeyMarker"], kwargs["UploadIdMarker"] = resp.get("NextKeyMarker"), resp.get("NextUploadIdMarker")

    # -- the run's phases ---------------------------------------------------------------------
    def prepare(self, run: SinkRun) -> None:
        """Abort multipart uploads of this run's keys left by a killed process; nothing else (a
        staged run's plan may be re-run alone at any time, so published output stays)."""
        self._abort_stale_uploads()

    def report(self) -> dict[str, Any]:
        """Nothing: ``commit`` finds every file, and its counts, in the bucket."""
        return {}

    def commit(self, run: SinkRun) -> None:
        """Prune partitions the run no longer has, then write the manifest and ``_SUCCESS`` from what
        the run's folder holds: works on a fresh instance in a process that wrote nothing."""
        with self._lock:
            partitions = list(self._open)
        for partition in partitions:
            self.finish_partition(partition)
        objects = self._list(self._root_prefix())
        if self.config.overwrite and run.partitions is not None:
            keep = {safe_key(k) for k in run.partitions}
            gone = [o["Key"] for o in objects if (self.layout.parts(o["Key"]) or ("", 0))[0] not in keep]
            if gone:
                self._withdraw()  # first, so no reader takes the folder for complete meanwhile
                self._delete(gone)
                objects = [o for o in objects if (self.layout.parts(o["Key"]) or ("", 0))[0] in keep]
        self._abort_stale_uploads()
        if not objects and not self.markers_when_empty:
            self._withdraw()  # e.g. no dead letters this time: an earlier attempt's manifest goes too
            return
        files = [self._entry(o) for o in sorted(objects, key=lambda o: o["Key"])]
        manifest = {
            "job": self.ctx.job_name,
            "run_id": self.ctx.run_id,
            "bucket": self.bucket,
            "format": self.format.type,
            "records": sum(f["records"] for f in files),
            "bytes": sum(f["bytes"] for f in files),
            "files": files,
        }
        root = self._root_prefix()
        if self.manifest_name:
            body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
            self.target.retry(lambda: self.client.put_object(Bucket=self.bucket, Key=root + self.manifest_name,
                                                             Body=body, ContentType="application/json"),
                              "writing", root + self.manifest_name)
        if self.marker_name:  # last: its presence means everything above is complete
            self.target.retry(lambda: self.client.put_object(Bucket=self.bucket, Key=root + self.marker_name,
                                                             Body=b""), "writing", root + self.marker_name)

    def _entry(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The manifest entry of a key: from this instance, else from the object's metadata (written by
        another process or an earlier attempt), else by reading it (a multipart object written elsewhere)."""
        key = obj["Key"]
        known = self._closed.get(key)
        if known is not None:
            return known
        head = self.target.retry(lambda: self.client.head_object(Bucket=self.bucket, Key=key), "checking", key)
        meta = head.get("Metadata") or {}
        etag = str(head.get("ETag", "")).strip('"')
        if "records" in meta and "sha256" in meta:
            return {"key": key, "records": int(meta["records"]), "bytes": int(head.get("ContentLength") or 0),
                    "sha256": meta["sha256"], "etag": etag}
        return {**self._describe(key), "etag": etag}

    def _describe(self, key: str) -> dict[str, Any]:
        """Size, checksum and record count of an object, read as a stream (never whole in memory);
        a binary format (Parquet) counts its records from the footer with ranged reads."""
        import hashlib

        sha, size = hashlib.sha256(), 0

        class Tee:
            def __init__(self, raw: Any) -> None:
                self.raw = raw

            def read(self, n: int = -1) -> bytes:
                nonlocal size
                data = self.raw.read(n)
                sha.update(data)
                size += len(data)
                return data

        with open_object(self.client, self.config, self.bucket, key, self.ctx) as raw:
            tee: Any = Tee(raw)
            if self.format.text:
                records = self.format.count(open_reader(tee, self.compression))
            else:
                while tee.read(1 << 20):
                    pass
        if not self.format.text:
            with RangedObject(self.client, self.config, self.bucket, key, self.ctx) as ranged:
                records = self.format.count(ranged)
        return {"key": key, "records": records, "bytes": size, "sha256": sha.hexdigest()}

    def abort(self, run: SinkRun) -> None:
        """Abort this instance's uploads, and withdraw the success marker and manifest: the attempt
        may have replaced part of the output they describe."""
        errors = self._abort_open()
        self._withdraw()
        if errors:
            raise PermanentError(f"s3 sink: {len(errors)} multipart upload(s) could not be aborted; first: {errors[0]}")

    def _withdraw(self) -> None:
        """Remove the success marker and manifest (missing ones are fine)."""
        self._delete(self._marker_keys())

    def _abort_open(self) -> list[str]:
        """Abort every file this instance holds open; returns one message per upload that failed."""
        with self._lock:
            open_files, self._open = [w for files in self._open.values() for w in files.values()], {}
        errors = []
        for writer in open_files:
            try:
                writer.abort()
            except Exception as exc:
                errors.append(f"{writer.key}: {exc}")
        return errors

    def close(self) -> None:
        """Abort unfinished uploads (never reported durable) and stop the upload threads."""
        if hasattr(self, "_open"):
            for error in self._abort_open():
                self.ctx.logger("s3").warning("aborting an unfinished upload failed", error=error)
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown()


__all__ = ["MISSING", "S3Sink", "S3SinkConfig"]
