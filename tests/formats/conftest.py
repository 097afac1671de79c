"""Fixtures of the format tests: an empty bucket on a freshly reset moto."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import BUCKET


@pytest.fixture
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET
