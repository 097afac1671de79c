"""What can go wrong with an HTTP request, classified once for the source, the sink and http_enrich.

``HttpTransient`` (connection errors, timeouts, 429, 5xx) is retried; ``HttpPermanent`` (other 4xx,
a refused redirect, an oversized body) is not. Both carry the status, the number of attempts made
and an excerpt of the body, so a dead letter can say what the server answered.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from sluice import PermanentError, SluiceError, TransientError
from sluice import secrets as secret_values

EXCERPT_BYTES = 200
"""How much of an error body a message or dead letter quotes."""


class HttpTransient(TransientError):
    """A retryable failure; ``retry_after`` is the server's requested delay in seconds, if any."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None,
                 excerpt: str = "") -> None:
        super().__init__(message)
        self.status, self.retry_after, self.excerpt = status, retry_after, excerpt
        self.attempts = 1


class HttpPermanent(PermanentError):
    """A failure that retrying will not fix (4xx other than 429, a refused redirect, an oversized body)."""

    def __init__(self, message: str, status: int | None = None, excerpt: str = "") -> None:
        super().__init__(message)
        self.status, self.excerpt = status, excerpt
        self.attempts = 1


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def excerpt(content: bytes, limit: int = EXCERPT_BYTES) -> str:
    """The start of a body as text, for messages (secrets masked)."""
    return secret_values.mask(content[:limit].decode("utf-8", "replace"))


def text(exc: BaseException) -> str:
    """An exception as one line for a reason or a log, with every known secret masked."""
    message = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
    return secret_values.mask(message)
