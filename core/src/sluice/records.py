"""The data that flows through a run: records, batches, partitions, dead letters, write results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]
"""A record is a JSON-like dict."""


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be delivered, with why.

    Plugins fill ``record``, ``reason``, ``error_type`` and ``context`` (file and line, ES error
    type, HTTP status...). The engine stamps the rest (stage, plugin, step, job, run, time) when
    it routes the dead letter, so plugin code never repeats it.
    """

    record: Any
    reason: str
    error_type: str = "Error"
    context: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    stage: str = ""
    plugin: str = ""
    step: int | None = None
    partition: str = ""
    job: str = ""
    run_id: str = ""
    time: str = ""

    def to_record(self) -> Record:
        """The dead letter as it is stored by the dead-letter sink."""
        return {
            "record": self.record,
            "reason": self.reason,
            "error_type": self.error_type,
            "context": self.context,
            "attempts": self.attempts,
            "stage": self.stage,
            "plugin": self.plugin,
            "step": self.step,
            "partition": self.partition,
            "job": self.job,
            "run_id": self.run_id,
            "time": self.time,
        }


@dataclass(slots=True)
class Partition:
    """An independent unit of source work (an ES slice, a group of S3 keys, a file).

    ``key`` is stable across runs of the same job and interval: checkpoints are stored under it.
    ``spec`` is JSON-serialisable so a partition can travel through Airflow XCom.
    """

    key: str
    spec: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "spec": self.spec}

    @property
    def fingerprint(self) -> str:
        """A short hash of ``spec``: saved with the partition's checkpoint, so a resume can tell
        that the partition still means the same work (same slice count, same key range...)."""
        import hashlib

        import orjson

        return hashlib.sha1(orjson.dumps(self.spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Partition:
        return cls(key=data["key"], spec=dict(data.get("spec") or {}))


@dataclass(slots=True)
class Batch:
    """A list of records plus where they came from and the source position reached after them.

    ``checkpoint`` must be JSON-serialisable; the engine saves it once the sink has made the batch
    durable. ``dead_letters`` holds records a source or transform rejected on the way.
    """

    records: list[Record]
    partition: str = ""
    seq: int = 0
    checkpoint: Any = None
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def reject(self, record: Any, reason: str, error_type: str = "Rejected", **context: Any) -> None:
        """Send ``record`` to dead letters with ``reason`` (it must not stay in ``records``)."""
        self.dead_letters.append(DeadLetter(record=record, reason=reason, error_type=error_type, context=context))

    def __len__(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class WriteResult:
    """What a sink reports for one ``write``.

    ``written`` counts records the sink accepted (including idempotent no-ops such as ``create``
    on an existing id). ``dead_letters`` are records it refused for good. ``durable`` is False when
    the sink buffered the records (a file still open): the engine then waits for a later durable
    write or ``finish_partition`` before saving the checkpoint.
    """

    written: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retries: int = 0
    durable: bool = True


def safe_key(key: str) -> str:
    """A partition key usable in a file or object name: unsafe characters replaced, and a short
    hash appended when anything was replaced, so two different keys never share a name."""
    import hashlib
    import re

    clean = re.sub(r"[^A-Za-z0-9._=-]+", "_", key).strip("._") or "p"
    if clean == key:
        return key
    return f"{clean[:80]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
