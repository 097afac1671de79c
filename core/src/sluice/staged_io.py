"""Records and checkpoints of a staged run's steps, kept in a staging store.

Each batch a step hands on is one object, ``{folder}/{partition}/{seq:08d}.jsonl[.zst]``, named by
the partition and the batch's sequence number. Reading a partition back yields the same batches
with the same numbers (an empty batch where a step wrote none), so the next step numbers its
batches as a run without staging would, and the destination's files come out identical.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from .codecs import EXTENSIONS, compressor, open_reader
from .components import CheckpointStore, Sink, Source
from .errors import PermanentError
from .lines import dumps_lines
from .records import Batch, Partition, WriteResult, safe_key
from .staging import StagingStore


@dataclass(frozen=True)
class StagedFolder:
    """A folder of a staging store holding one step's records, one subfolder per partition."""

    store: StagingStore
    folder: str

    def partition_folder(self, partition: str) -> str:
        return f"{self.folder}/{safe_key(partition)}"

    def key(self, partition: str, seq: int) -> str:
        return f"{self.partition_folder(partition)}/{seq:08d}.jsonl{EXTENSIONS[self.store.compression]}"

    def batches(self, partition: str) -> list[tuple[int, str]]:
        """``(seq, key)`` of the partition's staged batches, in order."""
        out = []
        for key in self.store.list(self.partition_folder(partition)):
            name = key.rsplit("/", 1)[-1]
            head = name.split(".", 1)[0]
            if head.isdigit():
                out.append((int(head), key))
        return sorted(out)


class StagedSink(Sink):
    """Writes each batch as one object of a staged folder (durable at once)."""

    type = "staging"
    config: StagedFolder

    def describe(self) -> str:
        return f"{self.config.store.describe()}/{self.config.folder}"

    def start_partition(self, partition: str, seq: int) -> None:
        stale = [key for s, key in self.config.batches(partition) if s >= seq]
        if stale:
            self.config.store.delete(stale)

    def write(self, batch: Batch) -> WriteResult:
        if batch.records:
            codec = compressor(self.config.store.compression)
            data = codec.compress(dumps_lines(batch.records)) + codec.flush()
            self.config.store.put(self.config.key(batch.partition, batch.seq), data)
        return WriteResult(written=len(batch.records))


@dataclass(frozen=True)
class StagedInput:
    """The partitions to read back from a staged folder."""

    staged: StagedFolder
    partitions: tuple[str, ...]


class StagedSource(Source):
    """Reads a staged folder back as the partitions and batches that were written into it."""

    type = "staging"
    config: StagedInput

    def describe(self) -> str:
        return f"{self.config.staged.store.describe()}/{self.config.staged.folder}"

    def partitions(self) -> list[Partition]:
        return [Partition(key) for key in self.config.partitions]

    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        staged, store = self.config.staged, self.config.staged.store
        after = -1 if checkpoint is None else int(checkpoint)
        expected = after + 1
        for seq, key in staged.batches(partition.key):
            if seq <= after:
                continue
            while expected < seq:  # the step wrote no records for that batch: keep the numbering
                yield Batch([], checkpoint=expected)
                expected += 1
            yield Batch(self._records(store, key), checkpoint=seq)
            expected = seq + 1

    @staticmethod
    def _records(store: StagingStore, key: str) -> list[dict[str, Any]]:
        import io

        data = store.get(key)
        if data is None:
            raise PermanentError(f"staging: {store.describe()}/{key} vanished while the step read it "
                                 "(was the run's staging removed?)")
        try:
            text = open_reader(io.BytesIO(data), store.compression).read()  # type: ignore[arg-type]
            return [orjson.loads(line) for line in text.splitlines() if line]
        except (orjson.JSONDecodeError, EOFError, OSError, ValueError) as exc:
            raise PermanentError(f"staging: {store.describe()}/{key} is damaged: {exc}") from None


class StagedCheckpoints(CheckpointStore):
    """A step's checkpoints in a staging folder: one object per partition (one atomic put per save)."""

    type = "staging"
    config: StagedFolder

    def __init__(self, config: StagedFolder) -> None:
        super().__init__(config)
        self._lock = threading.Lock()

    def _key(self, partition: str) -> str:
        return f"{self.config.folder}/{safe_key(partition)}.json"

    def load(self, job: str, run_id: str) -> dict[str, dict[str, Any]]:
        states: dict[str, dict[str, Any]] = {}
        for key in self.config.store.list(self.config.folder):
            data = self.config.store.get_json(key)
            if isinstance(data, dict) and "partition" in data:
                states[data["partition"]] = data["state"]
        return states

    def save(self, job: str, run_id: str, partition: str, state: dict[str, Any]) -> None:
        self.config.store.put(self._key(partition), orjson.dumps({"partition": partition, "state": state}))

    def clear(self, job: str, run_id: str) -> None:
        self.config.store.delete_prefix(self.config.folder)
