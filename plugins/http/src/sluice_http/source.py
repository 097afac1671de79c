"""The HTTP source (``type: http``): records from a paginated JSON, JSON Lines or CSV API.

Partitions come from a list of values (accounts, regions) and/or chunks of the data interval;
each partition pages through the API on its own, and all of them share the component's client
(one rate limiter, one in-flight bound, one retry policy). Pages are cut into batches of
``runtime.batch_size``; a batch's checkpoint is the page ``Position`` reached (the next page, or
the current page and how many of its records were delivered), so ``--resume`` requests exactly
the page a partition stopped in and never one it had finished.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluice import Batch, DeadLetter, Partition, PermanentError, RunContext, Source, late_template
from sluice.templating import IsoDateTime
from sluice_transforms.paths import split_path

from .bodies import Bad, Format, Malformed, kind_of, parse_page
from .client import HttpClient, Request
from .config import HttpOptions
from .errors import HttpPermanent, HttpTransient, excerpt, text
from .paging import Page, Pagination, Paginator, Position
from .templates import RequestTemplate

_CHUNK = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_chunk(value: str | float) -> timedelta:
    """``30m``, ``1h``, ``1d``, ``90s`` or a number of seconds."""
    match = _CHUNK.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"chunk {value!r}: give a length such as 15m, 1h, 1d or a number of seconds")
    length = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    if length < timedelta(seconds=1):  # partition keys name the chunk's start to the second
        raise ValueError(f"chunk {value!r} is shorter than a second")
    return length


class Partitions(BaseModel):
    """How the work splits into partitions that run in parallel (both: each value with each chunk)."""

    model_config = ConfigDict(extra="forbid")

    values: list[str | int] | None = Field(
        None, description="One partition per value (account ids, regions): {{ partition.value }} in templates. A "
                          "string is split on commas (values: \"{{ env.ACCOUNTS }}\").")
    chunk: str | None = Field(None, description="One partition per chunk of the data interval (15m, 1h, 1d or "
                                                "seconds): {{ partition.start }} and {{ partition.end }}.")

    @field_validator("values", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("values")
    @classmethod
    def _unique(cls, value: list[str | int] | None) -> list[str | int] | None:
        if value is not None:
            if not value:
                raise ValueError("values is empty: give at least one value")
            seen = [str(v) for v in value]
            dupes = sorted({v for v in seen if seen.count(v) > 1})
            if dupes:
                raise ValueError(f"values repeat {dupes}: each value is one partition")
        return value

    @field_validator("chunk")
    @classmethod
    def _chunk(cls, value: str | None) -> str | None:
        if value is not None:
            parse_chunk(value)
        return value


class HttpSourceConfig(HttpOptions):
    """Where the API is, how to page through it and where the records are in each page."""

    url: str = late_template(description="Request URL, templated per partition: "
                                         "https://api.example.com/accounts/{{ partition.value }}/events.")
    json_body: Any = late_template(None, alias="json", description="JSON request body (strings are templates).")
    records: str | None = Field(None, description="Path of the record list in a JSON page (data.items); unset: the "
                                                  "page is the list.")
    format: Format = Field("auto", description="Page body: json, jsonl (JSON Lines), csv, or auto (by "
                                               "Content-Type; JSON when it does not say).")
    csv_delimiter: str = Field(",", min_length=1, max_length=1, description="For csv pages: the field separator.")
    pagination: Pagination = Field(default_factory=Pagination, description="How to reach the next page and "
                                                                            "when to stop.")
    partitions: Partitions | None = Field(None, description="{values: [...]} and/or {chunk: 1h}: parallel "
                                                            "partitions; default one.")
    max_malformed_pages: int = Field(3, ge=0, description="Malformed pages in a row that become dead letters "
                                                          "before the partition fails (page, offset and "
                                                          "link_header pagination; others fail at the first).")
    max_response_bytes: int = Field(100_000_000, ge=1, description="Larger pages are a permanent failure.")

    @field_validator("records")
    @classmethod
    def _records(cls, value: str | None) -> str | None:
        if value is not None:
            split_path(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> HttpSourceConfig:
        if self.format in ("jsonl", "csv") and (self.pagination.needs_body or self.records):
            raise ValueError(f"{self.format} pages have no JSON body: 'records', pagination 'next' (cursor, "
                             "next_url) and 'total' need format json")
        if self.pagination.param_in == "json" and self.json_body is not None and not isinstance(self.json_body, dict):
            raise ValueError("pagination param_in: json needs 'json' to be an object (or unset)")
        return self


class HttpSource(Source):
    """Reads records from a paginated HTTP API (page number, offset, cursor, Link header or next URL),
    in parallel partitions (a list of values, chunks of the interval), resuming mid-pagination."""

    type = "http"
    Config = HttpSourceConfig
    config: HttpSourceConfig

    def open(self, ctx: RunContext) -> None:
        super().open(ctx)
        cfg = self.config
        self.client = HttpClient(cfg, ctx, "http_source")
        self.request = RequestTemplate(ctx, cfg, self.client, "http", "partition", cfg.json_body)
        self.paginator = Paginator(cfg.pagination)
        self.records = split_path(cfg.records) if cfg.records else None

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    def describe(self) -> str:
        return f"http {self.config.url}"

    # -- partitions -----------------------------------------------------------------------------
    def partitions(self) -> list[Partition]:
        p = self.config.partitions
        interval = self.ctx.interval
        chunks: list[tuple[datetime, datetime] | None] = [None]
        if p is not None and p.chunk:
            step, start, chunks = parse_chunk(p.chunk), interval.start, []
            while start < interval.end:
                chunks.append((start, min(start + step, interval.end)))
                start += step
        values: list[str | int | None] = list(p.values) if p is not None and p.values else [None]
        out = []
        for value in values:
            for chunk in chunks:
                spec: dict[str, Any] = {"value": value}
                key = "all" if value is None else str(value)
                if chunk is not None:
                    spec.update(start=chunk[0].isoformat(), end=chunk[1].isoformat())
                    stamp = f"{chunk[0]:%Y%m%dT%H%M%S}"
                    key = stamp if value is None else f"{value}-{stamp}"
                out.append(Partition(key, spec))
        return out

    def _scope(self, partition: Partition) -> dict[str, Any]:
        """``partition`` as templates see it: key, value, start and end (the run's interval unless chunked)."""
        spec, interval = partition.spec, self.ctx.interval
        start = datetime.fromisoformat(spec["start"]) if spec.get("start") else interval.start
        end = datetime.fromisoformat(spec["end"]) if spec.get("end") else interval.end
        return {"key": partition.key, "value": spec.get("value"), "start": IsoDateTime.of(start),
                "end": IsoDateTime.of(end)}

    # -- reading --------------------------------------------------------------------------------
    def read(self, partition: Partition, checkpoint: Any = None) -> Iterator[Batch]:
        pos = Position.from_checkpoint(checkpoint) if checkpoint else self.paginator.first()
        if pos.done:
            return
        scope = self._scope(partition)
        base = self.request.render(partition=scope)
        body = self.request.json_value(partition=scope)
        size = self.ctx.runtime.batch_size
        records: list[Any] = []
        dead: list[DeadLetter] = []
        malformed = 0
        while not pos.done:
            request = self._page(base, body, pos)
            label = self.client.label(request)
            where = f"http source: partition {partition.key!r}, page {pos.number + 1} ({label})"
            try:
                response = self.client.fetch(request)
            except (HttpTransient, HttpPermanent) as exc:
                if records or dead:  # deliver the pages before, so a resume starts at this one
                    yield Batch(records, checkpoint=pos.checkpoint(), dead_letters=dead)
                raise PermanentError(f"{where}: {text(exc)} (after {exc.attempts} attempt(s))") from None
            self.ctx.metrics.add("http_source.pages")
            try:
                kind = kind_of(response.headers.get("content-type", ""), self.config.format)
                parsed = parse_page(response.content, kind, self.records, self.config.csv_delimiter)
            except Malformed as exc:
                self.ctx.metrics.add("http_source.malformed_pages")
                malformed += 1
                reason = f"{where}: HTTP {response.status}: {exc}"
                after = self.paginator.after_malformed(pos, Page(0, None, response.headers.get("link"),
                                                                 response.url))
                if after is None or malformed > self.config.max_malformed_pages:
                    if records or dead:
                        yield Batch(records, checkpoint=pos.checkpoint(), dead_letters=dead)
                    why = ("the next page is unknown without it" if after is None
                           else f"{malformed} malformed pages in a row (max_malformed_pages)")
                    raise PermanentError(f"{reason}; body: {excerpt(response.content)!r}; {why}") from None
                dead.append(self._malformed(partition, pos, label, response, reason))
                pos = after
                if len(records) + len(dead) >= size:
                    yield Batch(records, checkpoint=pos.checkpoint(), dead_letters=dead)
                    records, dead = [], []
                continue
            malformed = 0
            items = parsed.items
            after = self.paginator.next(pos, Page(len(items), parsed.body, response.headers.get("link"),
                                                  response.url))
            i, clean = min(pos.skip, len(items)), parsed.clean
            while i < len(items):
                take = min(len(items) - i, size - len(records) - len(dead))
                chunk = items[i:i + take]
                if clean:
                    records.extend(chunk)
                else:
                    for item in chunk:
                        if type(item) is Bad:
                            dead.append(DeadLetter(item.item, f"{where}: {item.reason}", "MalformedRecord",
                                                   {"url": label, "page": pos.number + 1, "item": item.where}))
                        else:
                            records.append(item)
                i += take
                if len(records) + len(dead) >= size:
                    reached = after if i == len(items) else replace(pos, skip=i)
                    yield Batch(records, checkpoint=reached.checkpoint(), dead_letters=dead)
                    records, dead = [], []
            pos = after
        if records or dead:
            yield Batch(records, checkpoint=pos.checkpoint(), dead_letters=dead)

    def _page(self, base: Request, body: Any, pos: Position) -> Request:
        """The request for the page at ``pos``: the partition's request plus the page parameters, or
        the next URL the previous page named."""
        page_params = [(k, str(v)) for k, v in self.paginator.params(pos)]
        if pos.url is not None:  # link_header / next_url: the URL carries everything but the headers
            return replace(base, url=pos.url, params=())
        if self._json_pages and page_params:
            merged = {**(body or {}), **dict(self.paginator.params(pos))}
            headers = {**base.headers}
            headers.setdefault("content-type", "application/json")
            return replace(base, content=orjson.dumps(merged), headers=headers)
        return replace(base, params=(*base.params, *page_params)) if page_params else base

    @property
    def _json_pages(self) -> bool:
        return self.config.pagination.param_in == "json"

    @staticmethod
    def _malformed(partition: Partition, pos: Position, label: str, response: Any, reason: str) -> DeadLetter:
        body = excerpt(response.content)
        where = {"url": label, "status": response.status, "partition": partition.key, "page": pos.number + 1}
        return DeadLetter({**where, "body": body}, reason, "MalformedPage", {**where, "excerpt": body},
                          attempts=response.attempts)

