"""The HTTP sink (``type: http``): records POSTed (or PUT) to an API as JSON arrays, NDJSON, or one
request per record.

Each request carries an idempotency key derived from the run, the partition, the batch number and
the request's place in the batch, so a retried, resumed or re-run batch is recognisable downstream
and an idempotent API stores it once. Batches are cut by ``max_batch_records`` and
``max_batch_bytes`` deterministically, so the same batch always gives the same requests and keys.

Two-phase contract: what an API accepted is visible at once, so ``prepare``, ``commit`` and
``abort`` have nothing to do; ``start_partition`` has nothing to remove (a partition written again
sends the same keys). Writes are durable when the API answered.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluice import Batch, DeadLetter, PermanentError, RunContext, Sink, TransientError, WriteResult, late_template
from sluice.records import safe_key
from sluice.retry import retrying
from sluice_transforms.paths import MISSING, get_path, split_path

from .client import HttpClient, Request, Response, shut_down
from .config import HttpOptions
from .errors import HttpPermanent, HttpTransient, excerpt, text
from .paging import as_int
from .templates import RequestTemplate

CONTENT_TYPES = {"json_array": "application/json", "ndjson": "application/x-ndjson", "record": "application/json"}


class ItemResults(BaseModel):
    """Where a batch response reports each record's outcome, aligned with the records sent."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="Path of the result list in the response body (e.g. items); "
                                               "unset: the body is the list.")
    status: str = Field("status", description="Path of a result's HTTP status: 429 and 5xx are retried, other "
                                              "4xx become dead letters.")
    error: str | None = Field("error", description="Path of a result's error; a non-empty error marks a result "
                                                   "without a status as failed.")

    @field_validator("path", "status", "error")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            split_path(value)
        return value


class HttpSinkConfig(HttpOptions):
    """Where the records go, how they are grouped into requests, and how outcomes are read."""

    url: str = late_template(description="Request URL (record mode: a per-record template, e.g. "
                                         "https://api.example.com/users/{{ record.id }}).")
    method: str = late_template("POST", description="HTTP method: POST, PUT, PATCH (may be a template).")
    mode: Literal["json_array", "ndjson", "record"] = Field(
        "json_array", description="json_array: each request is a JSON array of records; ndjson: one record per "
                                  "line; record: one request per record, its JSON object as the body.")
    envelope: str | None = Field(None, description="json_array: send {\"<envelope>\": [...]} instead of a bare "
                                                   "array.")
    max_batch_records: int = Field(500, ge=1, description="Records per request at most (json_array, ndjson).")
    max_batch_bytes: int = Field(5_000_000, ge=1, description="Body bytes per request at most (a larger record "
                                                              "goes alone).")
    idempotency_header: str | None = Field(
        "Idempotency-Key", description="Header carrying '<run_id>/<partition>/<batch>/<request>' (the same on every "
                                       "retry, resume and re-run); null: none.")
    item_results: ItemResults | None = Field(None, description="{path, status, error}: per-record outcomes in the "
                                                               "response; unset: a 4xx dead-letters the whole "
                                                               "request.")

    @model_validator(mode="after")
    def _consistent(self) -> HttpSinkConfig:
        if self.envelope is not None and self.mode != "json_array":
            raise ValueError("envelope applies to mode json_array only")
        if self.item_results is not None and self.mode == "record":
            raise ValueError("item_results reads batch responses: not for mode record")
        templates = [self.url, self.method, *self.headers.values(), *self.params.values()]
        if self.mode != "record" and any("record" in t for t in templates):
            raise ValueError("url, method, headers and params may use 'record' only in mode: record (a request "
                             "carries many records)")
        return self


class _Throttled(TransientError):
    """Items of a batch request the API answered with 429 or 5xx (``item_results``)."""


@dataclass(slots=True)
class _Round:
    """Where one request's per-item retries stand."""

    todo: list[int]
    dead: list[DeadLetter] = field(default_factory=list)
    written: int = 0
    tries: int = 0  # requests sent so far (the client's attempts included)
    round: int = 0


@dataclass(slots=True)
class _Chunk:
    """The records of one request, their serialised forms, and its idempotency key."""

    records: list[Any]
    lines: list[bytes]
    key: str


class HttpSink(Sink):
    """Sends records to an HTTP API: JSON arrays or NDJSON batches, or one request per record, with an
    idempotency key per request; 429/5xx retried, 4xx per record or per request dead-lettered."""

    type = "http"
    Config = HttpSinkConfig
    config: HttpSinkConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        cfg = self.config
        self.client = HttpClient(cfg, ctx, "http_sink")
        self.request = RequestTemplate(ctx, cfg, self.client, "http sink", "record")
        self.pool = ThreadPoolExecutor(cfg.max_in_flight, thread_name_prefix="sluice-http-sink") \
            if cfg.mode == "record" else None
        results = cfg.item_results
        self.results = (split_path(results.path) if results and results.path else None,
                        split_path(results.status) if results else None,
                        split_path(results.error) if results and results.error else None)

    def close(self) -> None:
        shut_down(getattr(self, "pool", None), getattr(self, "client", None))

    def describe(self) -> str:
        return f"http {self.config.method} {self.config.url}"

    # -- writing --------------------------------------------------------------------------------
    def write(self, batch: Batch) -> WriteResult:
        prefix = f"{self.ctx.run_id}/{safe_key(batch.partition)}/{batch.seq}"
        if self.config.mode == "record":
            return self._write_records(batch, prefix)
        written, dead = 0, []
        for i, chunk in enumerate(self._chunks(batch.records)):
            chunk.key = f"{prefix}/{i}"
            ok, failed = self._send_chunk(chunk)
            written += ok
            dead.extend(failed)
        self.ctx.metrics.add("http_sink.batches")
        return WriteResult(written=written, dead_letters=dead, durable=True)

    def _chunks(self, records: list[Any]) -> list[_Chunk]:
        """The batch cut into requests by record count and body size, the same way every time."""
        cfg = self.config
        out: list[_Chunk] = []
        current = _Chunk([], [], "")
        size = 2
        for record in records:
            line = orjson.dumps(record)
            if current.records and (len(current.records) >= cfg.max_batch_records
                                    or size + len(line) + 1 > cfg.max_batch_bytes):
                out.append(current)
                current, size = _Chunk([], [], ""), 2
            current.records.append(record)
            current.lines.append(line)
            size += len(line) + 1
        if current.records:
            out.append(current)
        return out

    def _body(self, lines: list[bytes]) -> bytes:
        if self.config.mode == "ndjson":
            return b"\n".join(lines) + b"\n"
        array = b"[" + b",".join(lines) + b"]"
        if self.config.envelope is not None:
            return b"{" + orjson.dumps(self.config.envelope) + b":" + array + b"}"
        return array

    def _request(self, key: str, content: bytes, record: Any = None) -> Request:
        base = self.request.render(record=record) if record is not None else self.request.render()
        headers = {**base.headers, "content-type": CONTENT_TYPES[self.config.mode]}
        if self.config.idempotency_header:
            headers[self.config.idempotency_header] = key
        return replace(base, headers=headers, content=content)

    def _send_chunk(self, chunk: _Chunk) -> tuple[int, list[DeadLetter]]:
        """Send one request; with item_results, the items the API asked to retry (429/5xx) are sent
        again alone, backing off by the component's retry policy, until none is left or it gives up."""
        state = _Round(list(range(len(chunk.records))))

        def send() -> None:
            key = chunk.key if state.round == 0 else f"{chunk.key}/retry-{state.round}"
            state.round += 1
            request = self._request(key, self._body([chunk.lines[i] for i in state.todo]))
            label = self.client.label(request)
            try:
                response = self.client.fetch(request)
            except HttpPermanent as exc:
                context = {"url": label, "status": exc.status, "excerpt": exc.excerpt, "idempotency_key": key}
                reason = f"http sink: {label}: {text(exc)}"
                state.dead.extend(DeadLetter(chunk.records[i], reason, "HttpPermanent", context,
                                             attempts=state.tries + exc.attempts) for i in state.todo)
                return
            except HttpTransient as exc:
                raise PermanentError(f"http sink: {label}: {text(exc)} (gave up after {exc.attempts} attempt(s); "
                                     "--resume sends the batch again with the same idempotency keys)") from None
            state.tries += response.attempts
            if self.results[1] is None:
                state.written += len(state.todo)
                return
            retry: list[int] = []
            for i, (status, error) in zip(state.todo, self._outcomes(response, len(state.todo), label), strict=True):
                if status is not None and (status == 429 or status >= 500):
                    retry.append(i)
                elif (status is not None and status >= 400) or (status is None and error):
                    reason = f"http sink: {label}: item refused: HTTP {status}: {error}".replace(": None", "")
                    state.dead.append(DeadLetter(chunk.records[i], reason, "ItemRefused",
                                                 {"url": label, "status": status, "error": error,
                                                  "idempotency_key": key}, attempts=state.tries))
                else:
                    state.written += 1
            state.todo = retry
            if retry:
                raise _Throttled(f"http sink: {len(retry)} item(s) of request {chunk.key} answered 429/5xx")

        def sleep(seconds: float) -> None:
            if self.ctx.stop.wait(seconds):
                raise PermanentError("http sink: stopped while retrying refused items (the run is stopping)")

        policy = self.client.policy
        try:
            retrying(policy, retry_on=lambda exc: isinstance(exc, _Throttled), metrics=self.ctx.metrics
                     ).copy(sleep=sleep)(send)
        except _Throttled as exc:
            raise PermanentError(f"{exc}, still after {state.round} round(s); --resume sends them again") from None
        return state.written, state.dead

    def _outcomes(self, response: Response, n: int, label: str) -> list[tuple[int | None, Any]]:
        """``(status, error)`` per record sent, from ``item_results``."""
        path, status_path, error_path = self.results
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PermanentError(f"http sink: {label}: the answer is not JSON, so item_results cannot be read: "
                                 f"{excerpt(response.content)!r}") from None
        items = get_path(body, path) if path is not None else body
        if not isinstance(items, list) or len(items) != n:
            got = f"{len(items)} results" if isinstance(items, list) else "no result list"
            raise PermanentError(f"http sink: {label}: item_results: {got} for {n} records sent "
                                 f"({excerpt(response.content)!r})")
        out = []
        for item in items:
            status = get_path(item, status_path) if isinstance(item, dict) and status_path else MISSING
            error = get_path(item, error_path) if isinstance(item, dict) and error_path else MISSING
            out.append((as_int(status), None if error is MISSING else error))
        return out

    def _write_records(self, batch: Batch, prefix: str) -> WriteResult:
        assert self.pool is not None
        futures = [self.pool.submit(self._send_record, record, f"{prefix}/{i}") for i, record in
                   enumerate(batch.records)]
        try:
            outcomes = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        dead = [o for o in outcomes if o is not None]
        return WriteResult(written=len(outcomes) - len(dead), dead_letters=dead, durable=True)

    def _send_record(self, record: Any, key: str) -> DeadLetter | None:
        try:
            request = self._request(key, orjson.dumps(record), record)
        except Exception as exc:
            return DeadLetter(record, f"http sink: cannot build the request: {text(exc)}", "RequestTemplateError")
        label = self.client.label(request)
        try:
            self.client.fetch(request)
        except HttpPermanent as exc:
            return DeadLetter(record, f"http sink: {label}: {text(exc)}", "HttpPermanent",
                              {"url": label, "status": exc.status, "excerpt": exc.excerpt, "idempotency_key": key},
                              attempts=exc.attempts)
        except HttpTransient as exc:
            raise PermanentError(f"http sink: {label}: {text(exc)} (gave up after {exc.attempts} attempt(s); "
                                 "--resume sends the batch again with the same idempotency keys)") from None
        return None
