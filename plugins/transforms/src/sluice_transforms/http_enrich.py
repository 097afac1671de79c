"""``http_enrich``: call an HTTP API per record and map the response into it.

One pooled keep-alive ``httpx.Client`` and one thread pool per step serve every partition thread.
Each attempt waits for the step's rate limiter (a token bucket under a lock) and for an in-flight
slot, so ``rate_per_sec`` and ``max_in_flight`` hold across the whole run. Transient failures
(connection errors, timeouts, 429 honouring ``Retry-After``, 5xx) retry with jittered backoff
through core's tenacity policy; other 4xx are permanent. The optional cache is keyed by the
rendered request and collapses concurrent equal requests into one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from sluice import Batch, PermanentError, Record, SluiceError, Transform, TransientError
from sluice import secrets as secret_values
from sluice.retry import retrying

from .expressions import compile_expression
from .http_config import HttpEnrichConfig
from .paths import set_path, split_path
from .ratelimit import Cancelled, InFlight, RateLimiter

if TYPE_CHECKING:
    from sluice.context import RunContext


class HttpTransient(TransientError):
    """A retryable failure; ``retry_after`` is the server's requested delay in seconds, if any."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class HttpPermanent(PermanentError):
    """A failure that retrying will not fix (4xx other than 429, an oversized response)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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


@dataclass(slots=True)
class _Request:
    method: str
    url: str
    params: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    content: bytes | None

    def key(self) -> tuple[Any, ...]:
        return (self.method, self.url, self.params, self.content)

    def label(self) -> str:
        """``METHOD url?params`` for messages, with every known secret masked."""
        url = self.url
        if self.params:
            url += ("&" if "?" in url else "?") + urlencode(self.params)
        return secret_values.mask(f"{self.method} {url}")


@dataclass(slots=True)
class _Outcome:
    """What happened to one record."""

    ok: bool
    reason: str = ""
    error_type: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool | None = None


class _Cache:
    """TTL cache of responses plus single-flight: concurrent equal requests wait for the first one."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        from cachetools import TTLCache

        self._data: TTLCache[tuple[Any, ...], Any] = TTLCache(max_entries, ttl_s)
        self._pending: dict[tuple[Any, ...], Future[Any]] = {}
        self._lock = threading.Lock()

    def get_or_fetch(self, key: tuple[Any, ...], fetch: Callable[[], Any]) -> tuple[Any, bool]:
        """``(value, hit)``; failures are not cached (the next equal request tries again)."""
        with self._lock:
            try:
                return self._data[key], True
            except KeyError:
                pass
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = Future()
                owner = True
            else:
                owner = False
        if not owner:
            return pending.result(), True
        try:
            value = fetch()
        except BaseException as exc:
            with self._lock:
                self._pending.pop(key, None)
            pending.set_exception(exc)
            raise
        with self._lock:
            self._data[key] = value
            self._pending.pop(key, None)
        pending.set_result(value)
        return value, False


class HttpEnrich(Transform):
    """Calls an HTTP API for each record (templated URL, headers, params, body) and maps the response
    into the record with ``into`` or ``select`` (JMESPath); rate-limited, bounded, retried and cached."""

    type = "http_enrich"
    Config = HttpEnrichConfig
    config: HttpEnrichConfig
    stateless = False  # holds a client, a limiter and a cache: never shipped to a process pool

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self, ctx: RunContext) -> None:
        import httpx
        import jmespath

        super().open(ctx)
        cfg = self.config
        self._httpx = httpx
        self._url = self._template(cfg.url, "url")
        self._method = self._template(cfg.method, "method")
        self._headers = {k: self._template(v, f"headers.{k}") for k, v in cfg.headers.items()}
        self._params = [(k, self._template(v, f"params.{k}")) for k, v in cfg.params.items()]
        self._json = _compile_tree(cfg.json_body, self._template, "json") if cfg.json_body is not None else None
        self._body = self._template(cfg.body, "body") if cfg.body is not None else None
        self._when = compile_expression(cfg.when).fn if cfg.when else None
        self._vars = dict(ctx.variables)
        self._into = split_path(cfg.into) if cfg.into else None
        self._select = [(split_path(f), jmespath.compile(p)) for f, p in (cfg.select or {}).items()]
        rate = cfg.rate_per_sec if cfg.rate_per_sec is not None else ctx.runtime.api_rate_per_sec
        self._limiter = RateLimiter(rate, cfg.burst) if rate else None
        self._in_flight = InFlight(cfg.max_in_flight, ctx.stop)
        self._cache = _Cache(cfg.cache.ttl_s, cfg.cache.max_entries) if cfg.cache else None
        self._policy = cfg.retry or ctx.retry
        t = cfg.timeout
        self._timeout = t
        auth: Any = None
        headers = {"user-agent": "sluice-http-enrich/0.1"}
        if cfg.auth is not None and cfg.auth.type == "basic":
            password = cfg.auth.password.get_secret_value() if cfg.auth.password else ""
            auth = httpx.BasicAuth(cfg.auth.username or "", secret_values.remember(password))
        elif cfg.auth is not None and cfg.auth.token is not None:
            headers["authorization"] = f"Bearer {secret_values.remember(cfg.auth.token.get_secret_value())}"
        self._client = httpx.Client(
            auth=auth, headers=headers, follow_redirects=True,
            timeout=httpx.Timeout(t.read, connect=t.connect, pool=t.total),
            limits=httpx.Limits(max_connections=cfg.max_in_flight, max_keepalive_connections=cfg.max_in_flight,
                                keepalive_expiry=30.0),
        )
        self._pool = ThreadPoolExecutor(cfg.max_in_flight, thread_name_prefix="sluice-http-enrich")

    def close(self) -> None:
        pool, client = getattr(self, "_pool", None), getattr(self, "_client", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if client is not None:
            client.close()

    def describe(self) -> str:
        return f"http_enrich {self.config.url}"

    def _template(self, source: str, where: str) -> Callable[[Record], str]:
        render = self.ctx.compile(source, f"http_enrich.{where}")
        if "record" not in source:  # no per-record part (a secret, a job variable): render once
            value = render()
            return lambda record: value
        return lambda record: render(record=record)

    # -- the batch ------------------------------------------------------------------------------
    def apply(self, batch: Batch) -> Batch:
        records = batch.records
        if not records:
            return batch
        futures = [self._pool.submit(self._enrich, r) for r in records]
        outcomes: list[_Outcome] = []
        try:
            outcomes = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        out: list[Record] = []
        hits = misses = kept = 0
        failure: _Outcome | None = None
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome.cache_hit is True:
                hits += 1
            elif outcome.cache_hit is False:
                misses += 1
            if outcome.ok:
                out.append(record)
                continue
            if self.config.on_error == "keep":
                kept += 1
                out.append(record)
            elif self.config.on_error == "dead_letter":
                batch.reject(record, outcome.reason, outcome.error_type, **outcome.context)
            elif failure is None:
                failure = outcome
        metrics = self.ctx.metrics
        if self._cache is not None:
            metrics.add("http_enrich.cache_hits", hits)
            metrics.add("http_enrich.cache_misses", misses)
        failed = sum(1 for o in outcomes if not o.ok)
        if failed:
            metrics.add("http_enrich.failures", failed)
        if kept:
            metrics.add("http_enrich.failures_kept", kept)
        if failure is not None:
            raise PermanentError(f"{failure.reason} (on_error: fail)")
        batch.records = out
        return batch

    def _enrich(self, record: Record) -> _Outcome:
        if self._when is not None:
            try:
                if not self._when(record, self._vars):
                    return _Outcome(True)
            except Exception as exc:
                return _Outcome(False, f"http_enrich: when {self.config.when!r} failed: {_text(exc)}",
                                type(exc).__name__)
        try:
            request = self._render(record)
        except Exception as exc:
            return _Outcome(False, f"http_enrich: cannot build the request: {_text(exc)}", "RequestTemplateError")
        attempts = [0]
        try:
            if self._cache is not None:
                value, hit = self._cache.get_or_fetch(request.key(), lambda: self._fetch(request, attempts))
            else:
                value, hit = self._fetch(request, attempts), None
        except Cancelled:
            raise
        except (HttpTransient, HttpPermanent) as exc:
            context = {"url": request.label(), "status": exc.status, "attempts": attempts[0]}
            return _Outcome(False, f"http_enrich: {request.label()}: {_text(exc)}", type(exc).__name__, context)
        except Exception as exc:
            context = {"url": request.label(), "attempts": attempts[0]}
            return _Outcome(False, f"http_enrich: {request.label()}: {_text(exc)}", type(exc).__name__, context)
        try:
            # decoded per record, so records sharing a cached response never share its objects
            self._map(record, self._decode(*value))
        except HttpPermanent as exc:
            context = {"url": request.label(), "status": exc.status, "attempts": attempts[0]}
            return _Outcome(False, f"http_enrich: {request.label()}: {_text(exc)}", type(exc).__name__, context, hit)
        except Exception as exc:
            return _Outcome(False, f"http_enrich: cannot map the response of {request.label()}: {_text(exc)}",
                            "ResponseMappingError", cache_hit=hit)
        return _Outcome(True, cache_hit=hit)

    def _render(self, record: Record) -> _Request:
        method = self._method(record).strip().upper()
        url = self._url(record)
        params = tuple((k, f(record)) for k, f in self._params)
        headers = {k: f(record) for k, f in self._headers.items()}
        content: bytes | None = None
        if self._json is not None:
            content = orjson.dumps(self._json(record))
            headers.setdefault("content-type", "application/json")
        elif self._body is not None:
            content = self._body(record).encode()
        return _Request(method, url, params, headers, content)

    def _map(self, record: Record, value: Any) -> None:
        if self._into is not None:
            set_path(record, self._into, value)
        for parts, expr in self._select:
            set_path(record, parts, expr.search(value))

    # -- one request, retried -------------------------------------------------------------------
    def _fetch(self, request: _Request, attempts: list[int]) -> Any:
        policy = self._policy
        stop = self.ctx.stop
        retry = retrying(policy, metrics=self.ctx.metrics)
        base_wait = retry.wait

        def wait(state: Any) -> float:
            delay = base_wait(state)
            exc = state.outcome.exception() if state.outcome is not None else None
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:  # the server said when: never earlier, bounded by the policy
                delay = max(delay, min(retry_after, policy.max_time_s))
            return delay

        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise Cancelled("http_enrich: stopped during a retry backoff (the run is stopping: cancelled, or "
                                "another partition failed)")

        def attempt() -> Any:
            attempts[0] += 1
            return self._send(request)

        return retry.copy(wait=wait, sleep=sleep)(attempt)

    def _send(self, request: _Request) -> Any:
        httpx = self._httpx
        t = self._timeout
        # the slot first, then the token: a request leaves as soon as it gets its token, so send
        # times keep the limiter's spacing even when slots free up several at once
        with self._in_flight:
            if self._limiter is not None:
                self._limiter.acquire(self.ctx.stop)
            started = time.monotonic()
            deadline = started + t.total
            self.ctx.metrics.add("http_enrich.requests")
            try:
                timeout = httpx.Timeout(min(t.read, t.total), connect=min(t.connect, t.total), pool=t.total)
                with self._client.stream(request.method, request.url, params=request.params or None,
                                         headers=request.headers, content=request.content,
                                         timeout=timeout) as response:
                    status = response.status_code
                    if status == 429 or status >= 500:
                        raise HttpTransient(f"HTTP {status} {response.reason_phrase}", status,
                                            parse_retry_after(response.headers.get("retry-after")))
                    if status >= 400:
                        body = next(response.iter_bytes(), b"")[:200].decode("utf-8", "replace")
                        raise HttpPermanent(f"HTTP {status} {response.reason_phrase}: {body}".rstrip(": "), status)
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > self.config.max_response_bytes:
                            raise HttpPermanent(f"response larger than {self.config.max_response_bytes} bytes",
                                                status)
                        if time.monotonic() > deadline:
                            raise HttpTransient(f"total timeout: no complete response in {t.total}s")
                        chunks.append(chunk)
                    content = b"".join(chunks)
                    content_type = response.headers.get("content-type", "")
            except httpx.TimeoutException as exc:
                raise HttpTransient(f"timeout ({type(exc).__name__}) after {time.monotonic() - started:.1f}s") \
                    from None
            except httpx.TransportError as exc:
                raise HttpTransient(f"connection failed: {type(exc).__name__}: {exc}") from None
        return content, content_type

    def _decode(self, content: bytes, content_type: str) -> Any:
        mode = self.config.response
        if mode == "text":
            return content.decode("utf-8", "replace")
        if mode == "json" or "json" in content_type:
            try:
                return orjson.loads(content) if content else None
            except orjson.JSONDecodeError as exc:
                if mode == "json":
                    raise HttpPermanent(f"response is not JSON: {exc}") from None
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            return content.decode("utf-8", "replace")


def _compile_tree(value: Any, template: Callable[[str, str], Callable[[Record], str]], where: str
                  ) -> Callable[[Record], Any]:
    """A JSON body whose string leaves are templates, rendered per record."""
    if isinstance(value, str):
        return template(value, where)
    if isinstance(value, dict):
        items = [(k, _compile_tree(v, template, f"{where}.{k}")) for k, v in value.items()]
        return lambda record: {k: f(record) for k, f in items}
    if isinstance(value, list):
        parts = [_compile_tree(v, template, f"{where}[{i}]") for i, v in enumerate(value)]
        return lambda record: [f(record) for f in parts]
    return lambda record: value


def _text(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, SluiceError) else f"{type(exc).__name__}: {exc}"
    return secret_values.mask(text)
