"""The staging area between stages: where one run's extract/transform output and dead letters live.

Layout under ``{staging}/{job}/{interval}/`` (interval as ``20240101T000000-20240102T000000``)::

    extract/{partition}/part-{partition}-{seq}.jsonl[.zst]   a folder per source partition (a task each)
    transform/{partition or _all}/part-*                     the transformed records
    dead_letters/{stage}/{partition or _all}/part-*          every stage's dead letters, for finalize
    _checkpoints/{stage}/...                                 the stage runs' checkpoints

Every task writes only its own folder and a fresh attempt first empties it (the stage sinks
overwrite), so re-running a task rewrites the same keys. A local directory uses the ``jsonl``
source/sink; ``s3://`` uses the ``s3`` ones (zstd objects) with the connection settings of the
job's first S3 component (else the AWS default chain).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice import ConfigError
from sluice.records import safe_key
from sluice.templating import Interval

from .connections import S3_CONNECTION_FIELDS, S3_TYPES

ALL = "_all"  # the folder of a stage that ran as one task over every partition


def interval_label(interval: Interval) -> str:
    """``20240101T000000-20240102T000000``: the interval as a folder name."""
    return f"{interval.start:%Y%m%dT%H%M%S}-{interval.end:%Y%m%dT%H%M%S}"


def s3_connection_of(raw: dict[str, Any]) -> dict[str, Any]:
    """Connection fields of the job's first S3 component (destination, source, dead letters)."""
    for key in ("destination", "source", "dead_letter"):
        block = raw.get(key)
        if isinstance(block, dict) and block.get("type") in S3_TYPES:
            return {k: block[k] for k in S3_CONNECTION_FIELDS if k in block}
    return {}


@dataclass(frozen=True)
class Staging:
    """Where one run (job and interval) stages data, and the component blocks that read and write it."""

    root: str
    conn: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_run(cls, raw: dict[str, Any], interval: Interval) -> Staging:
        """The staging of ``raw`` (a job dict with ``connection:`` already expanded) for ``interval``."""
        base = raw.get("staging")
        if not base:
            raise ConfigError(f"job {raw.get('job_name')!r}: staging: is required under Airflow (s3://bucket/prefix "
                              "or a directory every worker shares)")
        root = f"{str(base).rstrip('/')}/{safe_key(str(raw['job_name']))}/{interval_label(interval)}"
        return cls(root, s3_connection_of(raw) if root.startswith("s3://") else {})

    @property
    def on_s3(self) -> bool:
        return self.root.startswith("s3://")

    def data(self, stage: str, partition: str | None = None) -> str:
        """The folder of a stage, or of one partition in it."""
        return f"{self.root}/{stage}" if partition is None else f"{self.root}/{stage}/{safe_key(partition)}"

    def dead(self, stage: str, partition: str | None = None) -> str:
        """The dead-letter folder of a stage, or of one partition in it."""
        return self.data(f"dead_letters/{stage}", partition)

    def sink(self, location: str) -> dict[str, Any]:
        """A sink block writing staged records to ``location`` (overwriting what a failed attempt left),
        as ``part-{partition}-{seq:05d}.jsonl[.zst]`` files."""
        if self.on_s3:
            return {"type": "s3", "uri": location, "key": "{prefix}/part-{partition}-{seq:05d}.jsonl.zst",
                    "compression": "zstd", "manifest": None, "success_marker": None, **self.conn}
        return {"type": "jsonl", "path": location, "compression": "none"}

    def source(self, location: str) -> dict[str, Any]:
        """A source block reading every staged file under ``location``, one partition per file
        (``StagedSource`` groups them back into the source partitions)."""
        if self.on_s3:
            return {"type": "s3", "uri": location, "keys_per_partition": 1, **self.conn}
        Path(location).mkdir(parents=True, exist_ok=True)  # a partition that staged nothing has no folder yet
        return {"type": "jsonl", "path": location}

    def checkpoints(self, stage: str, partition: str | None = None) -> dict[str, Any]:
        """A checkpoint store private to one task, so parallel tasks never overwrite each other's file."""
        if self.on_s3:
            return {"type": "s3", "uri": f"{self.root}/_checkpoints/{stage}", **self.conn}
        return {"type": "local", "path": self.data(f"_checkpoints/{stage}", partition or ALL)}

    def clean(self, render: Any) -> None:
        """Remove the run's staging (after a successful finalize). ``render`` renders the connection
        fields (they may hold ``secret()`` templates)."""
        if not self.on_s3:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        from sluice_s3.client import S3Connection, call, make_client, parse_uri

        conn = S3Connection.model_validate(render(self.conn, "staging"))
        client = make_client(conn)
        bucket, prefix = parse_uri(self.root)
        paginator = client.get_paginator("list_objects_v2")
        for page in call(lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix + "/")), "listing", conn,
                         bucket, prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents") or ()]
            if keys:
                call(lambda k=keys: client.delete_objects(Bucket=bucket, Delete={"Objects": k, "Quiet": True}),
                     "cleaning staging in", conn, bucket, prefix)
