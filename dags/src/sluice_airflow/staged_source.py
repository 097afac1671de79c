"""Reading a stage's staged files back as the source partitions they came from.

The staging sinks name every file ``part-{partition}-{seq:05d}.jsonl[.zst]`` (the partition key
made file-safe). This source groups the files of a staging folder by that partition and reads each
group's files in sequence order as one partition with the same key, so a later stage sees the
source's partitions again: a partition-scoped transform keeps its state per source partition, and
the destination names its files exactly as ``sluice run`` would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sluice import Batch, Partition, PermanentError, Source

_NAME = re.compile(r"part-(?P<partition>.+)-(?P<seq>\d{5,})\.jsonl(?:\.[a-z0-9]+)?\Z")


@dataclass(frozen=True)
class StagedConfig:
    """The inner source reading the staging folder (one partition per file), already validated."""

    inner_class: type
    inner_config: Any


class StagedSource(Source):
    """Staged files of one folder grouped back into their source partitions."""

    type = "sluice_staged"

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        self.inner: Source = self.config.inner_class(self.config.inner_config)
        self.inner.open(ctx)

    def close(self) -> None:
        inner = getattr(self, "inner", None)
        if inner is not None:
            inner.close()

    def describe(self) -> str:
        return self.inner.describe()

    def partitions(self) -> list[Partition]:
        groups: dict[str, list[tuple[int, Partition]]] = {}
        for part in self.inner.partitions():
            name = _file_name(part).rsplit("/", 1)[-1]
            match = _NAME.match(name)
            if match is None:
                raise PermanentError(f"staging: unexpected file {name!r} in {self.inner.describe()}")
            groups.setdefault(match["partition"], []).append((int(match["seq"]), part))
        return [Partition(key, {"files": [p.to_dict() for _, p in sorted(files, key=lambda f: f[0])]})
                for key, files in sorted(groups.items())]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        start, inner_cp = (checkpoint["file"], checkpoint["inner"]) if checkpoint else (0, None)
        files = partition.spec["files"]
        for i in range(start, len(files)):
            for batch in self.inner.read(Partition.from_dict(files[i]), inner_cp if i == start else None):
                batch.checkpoint = {"file": i, "inner": batch.checkpoint}
                yield batch


def _file_name(part: Partition) -> str:
    """The staged file behind one inner partition: a local path (jsonl) or an object key (s3, one
    object per partition)."""
    spec = part.spec
    return str(spec.get("path") or spec.get("last_key") or part.key)
