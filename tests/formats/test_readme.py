"""Every option of every installed format is documented in the README's File formats section and
carries a description (the README, `sluice schema` and error messages draw on them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.formats import format_types
from sluice.registry import Registry

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README.split("## File formats (`sluice-formats`)", 1)[-1].split("\n## ", 1)[0]
FORMATS = format_types(Registry.from_entry_points())


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_option_is_in_the_file_formats_section_and_described(name: str) -> None:
    assert f"`{name}`" in SECTION, f"format {name} is not in the README's File formats section"
    for attr, field in FORMATS[name].Config.model_fields.items():
        option = field.alias or attr
        assert f"`{option}`" in SECTION, f"format {name}: option {option!r} is not documented"
        assert field.description, f"format {name}: option {option!r} has no description"


def test_the_format_hook_and_the_example_jobs_are_documented() -> None:
    assert "`sluice_formats()`" in SECTION
    for job in ("examples/jobs/es_to_s3_parquet.yaml", "examples/jobs/csv_drop_to_es.yaml"):
        assert job in SECTION and (Path(__file__).resolve().parents[2] / job).is_file()
