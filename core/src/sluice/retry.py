"""Jittered exponential backoff for transient failures, shared by the engine and plugins.

What is transient is decided in one place, ``sluice.errors.is_transient`` (re-exported here).

Plugins classify their client's exceptions into ``TransientError`` / ``PermanentError`` (or pass
their own predicate) and call ``retry_call``; every retry is counted in the run's metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import tenacity

from .errors import is_transient

if TYPE_CHECKING:
    from .metrics import Metrics
    from .settings import RetryPolicy

T = TypeVar("T")


def retrying(
    policy: RetryPolicy,
    *,
    retry_on: Callable[[BaseException], bool] = is_transient,
    metrics: Metrics | None = None,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> tenacity.Retrying:
    """A tenacity ``Retrying`` following ``policy``; re-raises the last error when it gives up."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if metrics is not None:
            metrics.add("retries")
        if on_retry is not None:
            on_retry(state)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_after_delay(policy.max_time_s),
        wait=tenacity.wait_random_exponential(multiplier=policy.initial_backoff_s, max=policy.max_backoff_s),
        retry=tenacity.retry_if_exception(retry_on),
        before_sleep=before_sleep,
        reraise=True,
    )


def retry_call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    retry_on: Callable[[BaseException], bool] = is_transient,
    metrics: Metrics | None = None,
    on_retry: Callable[[tenacity.RetryCallState], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error occurs, or the policy gives up."""
    return retrying(policy, retry_on=retry_on, metrics=metrics, on_retry=on_retry)(fn)


__all__ = ["is_transient", "retry_call", "retrying"]
