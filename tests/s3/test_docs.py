"""Every option of every S3 component is documented in the plugin README (and described in its schema)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from sluice_s3.checkpoints import S3CheckpointsConfig
from sluice_s3.layout import PartitionBy
from sluice_s3.sink import S3SinkConfig
from sluice_s3.source import S3SourceConfig

README = (Path(__file__).resolve().parents[2] / "plugins/s3/README.md").read_text()


@pytest.mark.parametrize("model", [S3SourceConfig, S3SinkConfig, S3CheckpointsConfig, PartitionBy])
def test_every_option_is_in_the_readme_and_described(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert f"| `{name}` |" in README, f"{model.__name__}.{name} is not in the README's option tables"
        assert field.description, f"{model.__name__}.{name} has no description"
