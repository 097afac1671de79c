"""Entry-point module: hook implementations only; pyarrow is imported when a format is used."""

from __future__ import annotations

from sluice import hookimpl


@hookimpl
def sluice_formats() -> list[type]:
    from .delimited import CsvFormat, TsvFormat
    from .parquet import ParquetFormat

    return [ParquetFormat, CsvFormat, TsvFormat]
