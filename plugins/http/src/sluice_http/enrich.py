"""``http_enrich``: call an HTTP API per record and map the response into it.

The step's ``HttpClient`` (one pooled keep-alive client, limiter and retry policy) and one thread
pool of ``max_in_flight`` workers serve every partition thread, so ``rate_per_sec`` and
``max_in_flight`` hold across the whole run. The optional cache is keyed by the rendered request
and collapses concurrent equal requests into one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from sluice import Batch, DeadLetter, PermanentError, Record, Transform
from sluice_transforms.expressions import compile_expression
from sluice_transforms.paths import set_path, split_path

from .cache import ResponseCache
from .client import HttpClient, Request, Response, shut_down
from .enrich_config import HttpEnrichConfig
from .errors import HttpPermanent, HttpTransient, text
from .ratelimit import Cancelled
from .templates import RequestTemplate

if TYPE_CHECKING:
    from sluice.context import RunContext


@dataclass(slots=True)
class _Outcome:
    """What happened to one record."""

    ok: bool
    reason: str = ""
    error_type: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool | None = None
    attempts: int = 1


class HttpEnrich(Transform):
    """Calls an HTTP API for each record (templated URL, headers, params, body) and maps the response
    into the record with ``into`` or ``select`` (JMESPath); rate-limited, bounded, retried and cached."""

    type = "http_enrich"
    Config = HttpEnrichConfig
    config: HttpEnrichConfig
    stateless = False  # holds a client, a limiter and a cache: never shipped to a process pool

    # -- lifecycle ------------------------------------------------------------------------------
    def open(self, ctx: RunContext) -> None:
        import jmespath

        super().open(ctx)
        cfg = self.config
        self._client = HttpClient(cfg, ctx, "http_enrich")
        self._request = RequestTemplate(ctx, cfg, self._client, "http_enrich", "record", cfg.json_body, cfg.body)
        self._when = compile_expression(cfg.when).fn if cfg.when else None
        self._vars = dict(ctx.variables)
        self._into = split_path(cfg.into) if cfg.into else None
        self._select = [(split_path(f), jmespath.compile(p)) for f, p in (cfg.select or {}).items()]
        self._cache = ResponseCache(cfg.cache.ttl_s, cfg.cache.max_entries) if cfg.cache else None
        self._pool = ThreadPoolExecutor(cfg.max_in_flight, thread_name_prefix="sluice-http-enrich")

    def close(self) -> None:
        shut_down(getattr(self, "_pool", None), getattr(self, "_client", None))

    def describe(self) -> str:
        return f"http_enrich {self.config.url}"

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
                batch.dead_letters.append(DeadLetter(record, outcome.reason, outcome.error_type or "Rejected",
                                                     outcome.context, attempts=outcome.attempts))
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
                return _Outcome(False, f"http_enrich: when {self.config.when!r} failed: {text(exc)}",
                                type(exc).__name__)
        try:
            request = self._request.render(record=record)
        except Exception as exc:
            return _Outcome(False, f"http_enrich: cannot build the request: {text(exc)}", "RequestTemplateError")
        try:
            if self._cache is not None:
                response, hit = self._cache.get_or_fetch(request.key(), lambda: self._client.fetch(request))
            else:
                response, hit = self._client.fetch(request), None
        except Cancelled:
            raise
        except (HttpTransient, HttpPermanent) as exc:
            return self._failed(request, exc, exc.status, exc.attempts)
        except Exception as exc:
            return self._failed(request, exc, None, 1)
        attempts = 0 if hit else response.attempts  # a cached answer cost this record no request
        try:
            # decoded per record, so records sharing a cached response never share its objects
            self._map(record, self._decode(response))
        except HttpPermanent as exc:
            outcome = self._failed(request, exc, response.status, attempts)
            outcome.cache_hit = hit
            return outcome
        except Exception as exc:
            label = self._client.label(request)
            return _Outcome(False, f"http_enrich: cannot map the response of {label}: {text(exc)}",
                            "ResponseMappingError", {"url": label, "status": response.status}, hit, attempts)
        return _Outcome(True, cache_hit=hit)

    def _failed(self, request: Request, exc: BaseException, status: int | None, attempts: int) -> _Outcome:
        label = self._client.label(request)  # only for failures: redacting costs a URL parse
        context: dict[str, Any] = {"url": label, "status": status, "attempts": attempts}
        return _Outcome(False, f"http_enrich: {label}: {text(exc)}", type(exc).__name__, context, attempts=attempts)

    def _map(self, record: Record, value: Any) -> None:
        if self._into is not None:
            set_path(record, self._into, value)
        for parts, expr in self._select:
            set_path(record, parts, expr.search(value))

    def _decode(self, response: Response) -> Any:
        mode, content = self.config.response, response.content
        if mode == "text":
            return content.decode("utf-8", "replace")
        if mode == "json" or "json" in response.headers.get("content-type", ""):
            try:
                return orjson.loads(content) if content else None
            except orjson.JSONDecodeError as exc:
                if mode == "json":
                    raise HttpPermanent(f"response is not JSON: {exc}", response.status) from None
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            return content.decode("utf-8", "replace")
