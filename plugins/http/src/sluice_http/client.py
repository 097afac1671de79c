"""The one HTTP client of the source, the sink and http_enrich.

``HttpClient.fetch(request)`` sends one logical request and returns the whole response, or raises
``HttpTransient`` / ``HttpPermanent`` with the status, the attempts made and a body excerpt:

- **Limits.** Each attempt takes an in-flight slot (``max_in_flight`` across every thread) and then
  a token from the component's rate limiter, so ``rate_per_sec`` holds however many partitions ask.
- **Retries.** Connection errors, timeouts, 429 and 5xx retry with jittered exponential backoff
  through core's tenacity policy, waiting at least what ``Retry-After`` asks. A 401 under OAuth2
  drops the token and retries once with a new one.
- **Keep-alive.** Every response body is read before the connection goes back to the pool, error
  answers and redirects included, so a burst of 429s or 5xx does not open new connections.
- **Redirects** are followed here, hop by hop, under ``follow_redirects``: within the origin by
  default; with ``all``, a hop to another origin drops every secret-carrying header (auth, headers
  that name a credential or hold a ``secret()``), for that hop and every later one.
- **Timeouts**: connect and read per attempt, and ``total`` for the whole attempt, checked as the
  body streams in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from sluice.retry import retrying

from .auth import AuthLayer
from .errors import HttpPermanent, HttpTransient, excerpt, parse_retry_after
from .ratelimit import Cancelled, InFlight, RateLimiter
from .redact import origin, redact_url

if TYPE_CHECKING:
    from sluice.context import RunContext

    from .config import HttpOptions

REDIRECTS = (301, 302, 303, 307, 308)
MAX_HOPS = 10
DRAIN_BYTES = 1 << 20
"""Error and redirect bodies up to this size are read so the connection can be reused."""


@dataclass(slots=True)
class Request:
    """One logical request. ``secret_headers`` (lower-case names) never cross to another origin."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    secret_headers: frozenset[str] = frozenset()

    def key(self) -> tuple[Any, ...]:
        """What makes two requests equal (for the cache)."""
        return (self.method, self.url, self.params, self.content)


@dataclass(slots=True)
class Response:
    """A complete response: status, headers (case-insensitive), body, final URL and attempts made."""

    status: int
    reason: str
    headers: Any
    content: bytes
    url: str
    attempts: int = 1


class HttpClient:
    """A pooled keep-alive ``httpx.Client`` with the component's limiter, retries, auth and redirect rule.

    One instance per component serves every partition thread.
    """

    def __init__(self, options: HttpOptions, ctx: RunContext, prefix: str) -> None:
        import httpx

        self.options, self.ctx, self.prefix = options, ctx, prefix
        self._httpx = httpx
        rate = options.rate_per_sec if options.rate_per_sec is not None else ctx.runtime.api_rate_per_sec
        self.limiter = RateLimiter(rate, options.burst) if rate else None
        self.in_flight = InFlight(options.max_in_flight, ctx.stop)
        self.policy = options.retry or ctx.retry
        self.auth = AuthLayer(options.auth)
        t = options.timeout
        self.client = httpx.Client(
            headers={"user-agent": f"sluice-http/0.1 ({prefix})"}, follow_redirects=False,
            timeout=httpx.Timeout(t.read, connect=t.connect, pool=t.total),
            limits=httpx.Limits(max_connections=options.max_in_flight,
                                max_keepalive_connections=options.max_in_flight, keepalive_expiry=30.0),
        )

    def close(self) -> None:
        self.client.close()

    # -- building requests ----------------------------------------------------------------------
    def resolve(self, url: str) -> str:
        """``url`` joined to ``base_url`` when it is relative."""
        base = self.options.base_url
        if base and "://" not in url:
            return base.rstrip("/") + "/" + url.lstrip("/")
        return url

    def label(self, request: Request) -> str:
        """``METHOD url?params`` for messages: credential-like query values and secrets masked."""
        return f"{request.method} {redact_url(request.url, request.params, self.auth.param_names)}"

    # -- sending ----------------------------------------------------------------------------------
    def fetch(self, request: Request) -> Response:
        """Send ``request`` with retries; the complete 2xx response, or the last error, which
        carries ``attempts``, the attempts made."""
        policy, stop = self.policy, self.ctx.stop
        retry = retrying(policy, metrics=self.ctx.metrics)
        base_wait = retry.wait
        attempts = [0]
        refreshed = [False]

        def wait(state: Any) -> float:
            delay = base_wait(state)
            exc = state.outcome.exception() if state.outcome is not None else None
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:  # the server said when: never earlier, bounded by the policy
                delay = max(delay, min(retry_after, policy.max_time_s))
            return delay

        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise Cancelled(f"{self.prefix}: stopped during a retry backoff (the run is stopping: cancelled, "
                                "or another partition failed)")

        def attempt() -> Response:
            attempts[0] += 1
            response = self._attempt(request, refreshed)
            response.attempts = attempts[0]
            return response

        try:
            return retry.copy(wait=wait, sleep=sleep)(attempt)
        except (HttpTransient, HttpPermanent) as exc:
            exc.attempts = attempts[0]
            raise

    def _attempt(self, request: Request, refreshed: list[bool]) -> Response:
        httpx = self._httpx
        t = self.options.timeout
        # the slot first, then the token: a request leaves as soon as it gets its token, so send
        # times keep the limiter's spacing even when slots free up several at once
        with self.in_flight:
            if self.limiter is not None:
                self.limiter.acquire(self.ctx.stop)
            started = time.monotonic()
            deadline = started + t.total
            headers = dict(request.headers)
            token = self.auth.apply(self.client, headers)
            try:
                response = self._send(request, headers, deadline)
            except httpx.TimeoutException as exc:
                raise HttpTransient(f"timeout ({type(exc).__name__}) after {time.monotonic() - started:.1f}s") \
                    from None
            except httpx.TransportError as exc:
                raise HttpTransient(f"connection failed: {type(exc).__name__}: {exc}") from None
        status = response.status
        if status == 401 and token is not None and self.auth.oauth is not None and not refreshed[0]:
            refreshed[0] = True  # the token was revoked or expired early: one more try with a new one
            self.auth.oauth.invalidate(token)
            raise HttpTransient("HTTP 401: the access token was refused; fetching a new one", status, 0.0,
                                excerpt(response.content))
        if status == 429 or status >= 500:
            raise HttpTransient(f"HTTP {status} {response.reason}", status,
                                parse_retry_after(response.headers.get("retry-after")), excerpt(response.content))
        if status >= 400:
            body = excerpt(response.content)
            raise HttpPermanent(f"HTTP {status} {response.reason}: {body}".rstrip(": "), status, body)
        if status in REDIRECTS:
            raise HttpPermanent(f"HTTP {status} {response.reason}: a redirect to "
                                f"{redact_url(response.headers.get('location', '?'))} (follow_redirects: none)",
                                status)
        return response

    def _send(self, request: Request, headers: dict[str, str], deadline: float) -> Response:
        """One attempt: the request and its redirects, under the redirect rule."""
        t = self.options.timeout
        timeout = self._httpx.Timeout(min(t.read, t.total), connect=min(t.connect, t.total), pool=t.total)
        method, url, content = request.method, request.url, request.content
        params: tuple[tuple[str, str], ...] | None = (*request.params, *self.auth.params) or None
        start = origin(url)
        secret = request.secret_headers | self.auth.header_names
        left_origin = False
        for _hop in range(MAX_HOPS + 1):
            self.ctx.metrics.add(f"{self.prefix}.requests")
            built = self.client.build_request(method, url, params=params, headers=headers, content=content,
                                              timeout=timeout)
            stream = self.client.send(built, stream=True)
            try:
                status = stream.status_code
                location = stream.headers.get("location")
                if status in REDIRECTS and location and self.options.follow_redirects != "none":
                    _drain(stream)
                    target = urljoin(str(built.url), location)
                    if origin(target) != start:
                        if self.options.follow_redirects == "same_origin":
                            raise HttpPermanent(
                                f"HTTP {status}: redirect to another origin refused ({redact_url(target)}; "
                                "follow_redirects: same_origin)", status)
                        left_origin = True
                    if left_origin:  # never again with credentials, even if a later hop comes back
                        headers = {k: v for k, v in headers.items() if k.lower() not in secret}
                        target = _without_params(target, self.auth.param_names)
                    if status == 303 or (status in (301, 302) and method == "POST"):
                        method, content = "GET", None
                        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                    url, params = target, None
                    continue
                body = self._body(stream, status, deadline)
                return Response(status, stream.reason_phrase, stream.headers, body, str(built.url))
            finally:
                stream.close()
        raise HttpPermanent(f"more than {MAX_HOPS} redirects", None)

    def _body(self, stream: Any, status: int, deadline: float) -> bytes:
        limit = self.options.max_response_bytes if status < 400 else DRAIN_BYTES
        chunks: list[bytes] = []
        size = 0
        for chunk in stream.iter_bytes():
            size += len(chunk)
            if size > limit:
                if status >= 400:
                    break  # an error page that large: quote its start, let the connection go
                raise HttpPermanent(f"response larger than {self.options.max_response_bytes} bytes", status)
            if time.monotonic() > deadline:
                raise HttpTransient(f"total timeout: no complete response in {self.options.timeout.total}s")
            chunks.append(chunk)
        return b"".join(chunks)


def shut_down(pool: Any, client: HttpClient | None) -> None:
    """Close what a component opened: its worker pool (waiting for requests in flight), then its client."""
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    if client is not None:
        client.close()


def _without_params(url: str, names: frozenset[str]) -> str:
    """``url`` without the query parameters ``names`` (an API key a server echoed into a redirect)."""
    if not names:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _drain(stream: Any) -> None:
    """Read a body we do not need, so the connection is reused (small bodies only)."""
    size = 0
    for chunk in stream.iter_bytes():
        size += len(chunk)
        if size > DRAIN_BYTES:
            return
