"""A complete Sluice plugin: one transform, registered through the ``sluice.plugins`` entry point."""

from __future__ import annotations

from pydantic import Field

from sluice import ComponentConfig, Record, RecordTransform, hookimpl


class RedactConfig(ComponentConfig):
    """Which fields to redact, and with what."""

    fields: list[str] = Field(description="Top-level fields whose values are replaced.")
    mask: str = Field("***", description="The replacement value.")


class Redact(RecordTransform):
    """Replaces the values of the given fields (when present) with a mask."""

    type = "redact"
    Config = RedactConfig
    config: RedactConfig

    def process(self, record: Record) -> Record:
        for field in self.config.fields:
            if field in record:
                record[field] = self.config.mask
        return record


@hookimpl
def sluice_transforms() -> list[type]:
    return [Redact]
