"""Configuration of ``http_enrich``: request templates, limits, retries, caching and mapping."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from sluice import ComponentConfig, late_template
from sluice.settings import RetryPolicy

from .expressions import ExpressionText
from .paths import split_path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Time limits of one request attempt, in seconds."""

    connect: float = Field(5.0, gt=0, description="Establishing the TCP/TLS connection.")
    read: float = Field(30.0, gt=0, description="Waiting for each piece of the response.")
    total: float = Field(60.0, gt=0, description="The whole attempt, from connecting to the last byte.")


class Auth(_Strict):
    """Credentials, usually from secrets: ``token: "{{ secret('API_TOKEN') }}"``."""

    type: Literal["basic", "bearer"] = Field(description="basic (username/password) or bearer (token).")
    username: str | None = Field(None, description="For basic.")
    password: SecretStr | None = Field(None, description="For basic.")
    token: SecretStr | None = Field(None, description="For bearer: sent as 'Authorization: Bearer <token>'.")

    @model_validator(mode="after")
    def _complete(self) -> Auth:
        if self.type == "basic" and (self.username is None or self.password is None):
            raise ValueError("basic auth needs 'username' and 'password'")
        if self.type == "bearer" and self.token is None:
            raise ValueError("bearer auth needs 'token'")
        return self


class CacheConfig(_Strict):
    """In-memory response cache keyed by the rendered request (method, URL, params, body)."""

    ttl_s: float = Field(300.0, gt=0, description="How long a response is reused.")
    max_entries: int = Field(10_000, ge=1, description="Responses kept; the oldest go first.")


class HttpEnrichConfig(ComponentConfig):
    """One HTTP call per record (or per distinct request, with the cache), mapped into the record."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = late_template(description="Request URL, a per-record template: "
                                         "https://api.example.com/users/{{ record.user_id }}.")
    method: str = late_template("GET", description="HTTP method (may be a template).")
    headers: dict[str, str] = late_template({}, description="Header templates; secrets via "
                                                           "{{ secret('NAME') }} (masked in logs).")
    params: dict[str, str] = late_template({}, description="Query parameter templates.")
    json_body: Any = late_template(None, alias="json", description="JSON body: any structure whose strings are "
                                                                   "templates.")
    body: str | None = late_template(None, description="Raw body template (instead of json).")
    auth: Auth | None = Field(None, description="basic or bearer credentials.")
    timeout: Timeouts = Field(default_factory=Timeouts, description="connect, read and total seconds.")
    rate_per_sec: float | None = Field(None, gt=0, description="Requests per second for this step across all "
                                                               "threads (default: runtime.api_rate_per_sec; "
                                                               "neither: unlimited).")
    burst: int = Field(1, ge=1, description="Requests allowed at once after an idle spell (token bucket size).")
    max_in_flight: int = Field(8, ge=1, le=256, description="Requests at once for this step across all threads; "
                                                            "also the concurrency within a batch.")
    retry: RetryPolicy | None = Field(None, description="Override runtime.retry for this step.")
    cache: CacheConfig | None = Field(None, description="{ttl_s, max_entries}: reuse responses to equal requests.")
    into: str | None = Field(None, description="Field path that receives the whole response (parsed JSON, or text).")
    select: dict[str, str] | None = Field(None, description="Field path → JMESPath into the response, e.g. "
                                                            "{country: 'data.country.code'}.")
    when: ExpressionText | None = Field(None, description="Only enrich records for which this expression is "
                                                          "true; others pass unchanged.")
    on_error: Literal["dead_letter", "keep", "fail"] = Field(
        "dead_letter", description="On a permanent failure (4xx, retries exhausted): dead-letter the record, keep "
                                   "it unchanged, or fail the run.")
    response: Literal["auto", "json", "text"] = Field("auto", description="How to read the body (auto: JSON when "
                                                                          "it parses as JSON, else text).")
    max_response_bytes: int = Field(10_000_000, ge=1, description="Larger responses are a permanent failure.")

    @field_validator("into")
    @classmethod
    def _into(cls, value: str | None) -> str | None:
        if value is not None:
            split_path(value)
        return value

    @field_validator("select")
    @classmethod
    def _select(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        import jmespath
        from jmespath.exceptions import JMESPathError

        for field, path in (value or {}).items():
            split_path(field)
            try:
                jmespath.compile(path)
            except JMESPathError as exc:
                raise ValueError(f"select.{field}: invalid JMESPath {path!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _mapping(self) -> HttpEnrichConfig:
        if self.into is None and not self.select:
            raise ValueError("set 'into' (a field for the whole response) or 'select' (fields from JMESPath)")
        if self.json_body is not None and self.body is not None:
            raise ValueError("give 'json' or 'body', not both")
        return self
