"""Run settings every layer may see: retries, threads, memory and the error-rate threshold.

A leaf module (pydantic only), so what a component sees of its run (``context.py``) does not
depend on the job-file loader.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(Strict):
    """Jittered exponential backoff for transient failures, bounded by attempts and time."""

    attempts: int = Field(5, ge=1, description="Tries in all, the first one included.")
    initial_backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)
    max_time_s: float = Field(300.0, gt=0, description="Give up retrying after this long.")


class RuntimeConfig(Strict):
    """How a run uses threads and memory, and when it counts as failed."""

    batch_size: int = Field(2000, ge=1, description="Records per batch read from the source.")
    max_workers: int = Field(4, ge=1, description="Partitions processed at once.")
    max_in_flight_batches: int = Field(
        8, ge=1, description="Batches alive at once across the run (read, not yet written): bounds memory."
    )
    error_rate_threshold: float = Field(
        0.01, ge=0, le=1, description="Fail the run when dead letters / records read exceeds this."
    )
    api_rate_per_sec: float | None = Field(None, gt=0, description="Default rate for rate-limited transforms.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
