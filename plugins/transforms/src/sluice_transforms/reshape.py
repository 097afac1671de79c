"""Field-shaping transforms: ``rename``, ``select``, ``drop``, ``flatten`` and ``unflatten``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from sluice import Batch, ComponentConfig, Record, RecordTransform, Reject, RunContext

from .paths import MISSING, drop_paths, pop_path, select_paths, set_path, split_path


class RenameConfig(ComponentConfig):
    """Old field path → new field path."""

    fields: dict[str, str] = Field(description="Mapping of old to new field paths; dotted paths reach into "
                                               "nested objects (user.name: user_name). Missing fields are skipped.")

    @field_validator("fields")
    @classmethod
    def _paths(cls, value: dict[str, str]) -> dict[str, str]:
        for old, new in value.items():
            split_path(old), split_path(new)
        return value


class Rename(RecordTransform):
    """Moves fields to new names or paths (``{old: new}``), creating nested objects as needed."""

    type = "rename"
    Config = RenameConfig
    config: RenameConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._moves = [(split_path(o), split_path(n)) for o, n in self.config.fields.items()]
        self._flat = all(len(o) == 1 and len(n) == 1 for o, n in self._moves)

    def process(self, record: Record) -> Record:
        if self._flat:
            for (old,), (new,) in self._moves:
                if old in record:
                    record[new] = record.pop(old)
            return record
        for old, new in self._moves:
            value = pop_path(record, old)
            if value is not MISSING:
                try:
                    set_path(record, new, value)
                except ValueError as exc:
                    raise Reject(f"rename: {exc}", "RenameError") from None
        return record


class FieldsConfig(ComponentConfig):
    """A list of field patterns."""

    fields: list[str] = Field(min_length=1, description="Field names or dotted paths; each segment may use "
                                                        "shell wildcards (*, ?, [abc]), e.g. 'meta.*' or 'tmp_*'.")

    @field_validator("fields")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            split_path(path)
        return value


class Select(RecordTransform):
    """Keeps only the listed fields (wildcards and dotted paths allowed); the rest are removed."""

    type = "select"
    Config = FieldsConfig
    config: FieldsConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._patterns = [split_path(p) for p in self.config.fields]
        plain = all(len(p) == 1 and not any(c in p[0] for c in "*?[") for p in self._patterns)
        self._keys = [p[0] for p in self._patterns] if plain else None

    def apply(self, batch: Batch) -> Batch:
        if self._keys is not None:  # plain top-level names: one dict comprehension per record
            keys = self._keys
            batch.records = [{k: r[k] for k in keys if k in r} for r in batch.records]
            return batch
        patterns = self._patterns
        batch.records = [select_paths(r, patterns) for r in batch.records]
        return batch

    def process(self, record: Record) -> Record:
        return select_paths(record, self._patterns)


class Drop(RecordTransform):
    """Removes the listed fields (wildcards and dotted paths allowed); missing fields are ignored."""

    type = "drop"
    Config = FieldsConfig
    config: FieldsConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        self._patterns = [split_path(p) for p in self.config.fields]

    def apply(self, batch: Batch) -> Batch:
        patterns = self._patterns
        for record in batch.records:
            drop_paths(record, patterns)
        return batch

    def process(self, record: Record) -> Record:
        return drop_paths(record, self._patterns)


class FlattenConfig(ComponentConfig):
    """How to join nested keys."""

    separator: str = Field(".", min_length=1, description="Joins parent and child keys: {a: {b: 1}} → {a.b: 1}.")
    max_depth: int | None = Field(None, ge=1, description="Flatten at most this many levels (None: all).")


class Flatten(RecordTransform):
    """Turns nested objects into top-level keys joined by ``separator``; lists are left as they are."""

    type = "flatten"
    Config = FlattenConfig
    config: FlattenConfig

    def process(self, record: Record) -> Record:
        if not any(type(v) is dict for v in record.values()):
            return record
        out: Record = {}
        _flatten(record, "", self.config.separator, self.config.max_depth or -1, out)
        return out


def _flatten(obj: dict[str, Any], prefix: str, sep: str, depth: int, out: dict[str, Any]) -> None:
    for key, value in obj.items():
        name = f"{prefix}{sep}{key}" if prefix else key
        if type(value) is dict and value and depth != 0:
            _flatten(value, name, sep, depth - 1, out)
        else:
            out[name] = value


class UnflattenConfig(ComponentConfig):
    """Which separator splits keys."""

    separator: str = Field(".", min_length=1, description="Splits keys into nested objects: {a.b: 1} → {a: {b: 1}}.")


class Unflatten(RecordTransform):
    """Turns keys containing ``separator`` into nested objects; a key that is both a value and an
    object (``a: 1`` and ``a.b: 2``) dead-letters the record."""

    type = "unflatten"
    Config = UnflattenConfig
    config: UnflattenConfig

    def process(self, record: Record) -> Record:
        sep = self.config.separator
        if not any(sep in k for k in record):
            return record
        out: Record = {}
        for key, value in record.items():
            parts = tuple(key.split(sep)) if sep in key else (key,)
            try:
                _merge(out, parts, value)
            except ValueError as exc:
                raise Reject(f"unflatten: {exc}", "UnflattenConflict") from None
        return out


def _merge(out: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    for i, part in enumerate(parts[:-1]):
        nxt = out.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ValueError(f"key {'.'.join(parts)!r} conflicts with the value at {'.'.join(parts[: i + 1])!r}")
        out = nxt
    last = parts[-1]
    if last in out and isinstance(out[last], dict) and isinstance(value, dict):
        _deep_merge(out[last], value, parts)
    elif last in out:
        raise ValueError(f"key {'.'.join(parts)!r} is given twice")
    else:
        out[last] = value


def _deep_merge(dst: dict[str, Any], src: dict[str, Any], where: tuple[str, ...]) -> None:
    for key, value in src.items():
        if key in dst and isinstance(dst[key], dict) and isinstance(value, dict):
            _deep_merge(dst[key], value, (*where, key))
        elif key in dst:
            raise ValueError(f"key {'.'.join((*where, key))!r} is given twice")
        else:
            dst[key] = value
