"""Output key layout: the key template (after Jinja), the hive folder of ``partition_by``, and the
pattern that recognises this run's files (for the manifest and for removing stale files).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field

from sluice import ComponentConfig, ConfigError

FIELDS = {"partition": r"[^/]+", "seq": r"\d+", "partition_by": r"[^/]+=[^/]*"}
MISSING = "__missing__"


@dataclass(frozen=True)
class KeyLayout:
    """A key template with ``{partition}``, ``{seq}`` and ``{partition_by}`` left to fill per file."""

    template: str
    root: str  # the fixed folder every key starts with: where _manifest.json and _SUCCESS go
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, template: str, prefix: str, partitioned: bool) -> KeyLayout:
        template = template.replace("{prefix}", prefix).lstrip("/")
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        unknown = sorted(set(names) - set(FIELDS))
        if unknown:
            raise ConfigError(f"s3 sink: key template {template!r}: unknown field(s) {unknown}; "
                              f"known: {{prefix}}, {{partition}}, {{seq}}, {{partition_by}}")
        if "partition" not in names or "seq" not in names:
            raise ConfigError(f"s3 sink: key template {template!r} needs {{partition}} and {{seq}} so that "
                              "every file has its own deterministic key")
        if partitioned and "partition_by" not in names:
            head, _, name = template.rpartition("/")
            template = f"{head}/{{partition_by}}/{name}" if head else f"{{partition_by}}/{name}"
        regex: list[str] = []
        seen: set[str] = set()
        for literal, field, _, _ in string.Formatter().parse(template):
            regex.append(re.escape(literal))
            if field is not None:
                # named once, so a key tells which partition and sequence it holds
                regex.append(f"(?P<{field}>{FIELDS[field]})" if field not in seen else f"(?:{FIELDS[field]})")
                seen.add(field)
        root = template[: _first_field(template)].rpartition("/")[0]
        return cls(template, root, re.compile("".join(regex) + r"\Z"))

    def key(self, partition: str, seq: int, folder: str = "") -> str:
        """The key of the file of ``partition`` (already ``safe_key``-ed) started at batch ``seq``."""
        return self.template.format(partition=partition, seq=seq, partition_by=folder)

    def parts(self, key: str) -> tuple[str, int] | None:
        """``(partition, seq)`` of one of this layout's keys, None for any other key."""
        m = self.pattern.match(key)
        return (m["partition"], int(m["seq"])) if m else None


def _first_field(template: str) -> int:
    pos = 0
    for literal, field, _, _ in string.Formatter().parse(template):
        pos += len(literal)
        if field is not None:
            return pos
    return pos


class PartitionBy(ComponentConfig):
    """Hive-style folders ``{name}={value}`` from one record field."""

    field: str = Field(description="Record field (dotted path for nested fields, e.g. event.created).")
    format: Literal["value", "date", "hour", "month", "year"] = Field(
        "value", description="value: the field as is; date/hour/month/year: the UTC time of an ISO string or "
                             "epoch (seconds or milliseconds), as 2024-01-31 / 2024-01-31T13 / 2024-01 / 2024."
    )
    name: str | None = Field(None, description="Folder name; default: the field without @ (e.g. timestamp).")
    missing: Literal["folder", "dead_letter"] = Field(
        "folder", description=f"A record without the field (or with an unparsable time): into the {MISSING} "
                              "folder, or to dead letters."
    )


_TIME_FORMATS = {"date": "%Y-%m-%d", "hour": "%Y-%m-%dT%H", "month": "%Y-%m", "year": "%Y"}


class Folders:
    """Computes the ``partition_by`` folder of records; ``None`` when the value is missing/invalid."""

    def __init__(self, spec: PartitionBy) -> None:
        self.path = spec.field.split(".")
        self.time_format = _TIME_FORMATS.get(spec.format)
        name = spec.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.field.lstrip("@")).strip("_") or "value"
        self.name = quote(name, safe="-_.")
        self.missing_folder = f"{self.name}={MISSING}"
        self.cache: dict[Any, str | None] = {}  # few distinct values per run: format each once

    def value(self, record: dict[str, Any]) -> Any:
        value: Any = record
        for part in self.path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def folder(self, record: dict[str, Any]) -> str | None:
        value = self.value(record)
        if value is None or value == "" or isinstance(value, dict | list):
            return None
        try:
            return self.cache[value]
        except KeyError:
            pass
        except TypeError:  # unhashable
            return None
        text = self._format(value)
        folder = None if text is None else f"{self.name}={quote(text, safe='-_.:')}"
        if len(self.cache) < 100_000:
            self.cache[value] = folder
        return folder

    def _format(self, value: Any) -> str | None:
        if self.time_format is None:
            return str(value).lower() if isinstance(value, bool) else str(value)
        try:
            if isinstance(value, bool):
                return None
            if isinstance(value, int | float):
                seconds = value / 1000 if abs(value) > 1e11 else value  # epoch milliseconds or seconds
                dt = datetime.fromtimestamp(seconds, UTC)
            else:
                dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
                dt = dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
        except (ValueError, OverflowError, OSError):
            return None
        return dt.strftime(self.time_format)
