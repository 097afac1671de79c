"""Options every HTTP component shares: the request, auth, timeouts, limits, retries and redirects.

The source, the sink and ``http_enrich`` subclass ``HttpOptions``, so one option means the same
thing everywhere and one client (``client.HttpClient``) serves all three.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from sluice import ComponentConfig, late_template
from sluice.settings import RetryPolicy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Timeouts(_Strict):
    """Time limits of one request attempt, in seconds."""

    connect: float = Field(5.0, gt=0, description="Establishing the TCP/TLS connection.")
    read: float = Field(30.0, gt=0, description="Waiting for each piece of the response.")
    total: float = Field(60.0, gt=0, description="The whole attempt, from connecting to the last byte.")


class Auth(_Strict):
    """Credentials, usually from secrets: ``token: "{{ secret('API_TOKEN') }}"``; masked in logs and errors."""

    type: Literal["basic", "bearer", "api_key", "oauth2"] = Field(
        description="basic (username/password), bearer (token), api_key (key in a header or the query) or "
                    "oauth2 (client credentials: token_url, client_id, client_secret).")
    username: str | None = Field(None, description="For basic.")
    password: SecretStr | None = Field(None, description="For basic.")
    token: SecretStr | None = Field(None, description="For bearer: sent as 'Authorization: Bearer <token>'.")
    key: SecretStr | None = Field(None, description="For api_key: the key.")
    name: str | None = Field(None, description="For api_key: the header (default X-Api-Key) or query parameter "
                                               "(default api_key) that carries the key.")
    location: Literal["header", "query"] = Field("header", alias="in",
                                                 description="For api_key: send the key in a header or the query.")
    token_url: str | None = Field(None, description="For oauth2: the token endpoint (client credentials grant).")
    client_id: str | None = Field(None, description="For oauth2.")
    client_secret: SecretStr | None = Field(None, description="For oauth2.")
    scope: str | None = Field(None, description="For oauth2: the scope requested, if any.")
    client_auth: Literal["basic", "body"] = Field(
        "basic", description="For oauth2: send the client credentials as HTTP Basic (RFC 6749's default) or in "
                             "the form body.")
    refresh_before_s: float = Field(60.0, ge=0, description="For oauth2: fetch a new token this long before the "
                                                            "current one expires (at most half its lifetime).")

    @model_validator(mode="after")
    def _complete(self) -> Auth:
        needs = {"basic": ("username", "password"), "bearer": ("token",), "api_key": ("key",),
                 "oauth2": ("token_url", "client_id", "client_secret")}[self.type]
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(f"{self.type} auth needs " + " and ".join(repr(n) for n in missing))
        return self


class HttpOptions(ComponentConfig):
    """The request and the client: shared by the HTTP source, the HTTP sink and http_enrich."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str = late_template(description="Request URL (a template; absolute, or relative to base_url).")
    base_url: str | None = Field(None, description="Prefix of a relative url (e.g. from an orchestrator "
                                                   "connection).")
    method: str = late_template("GET", description="HTTP method (may be a template).")
    headers: dict[str, str] = late_template({}, description="Header templates; secrets via "
                                                           "{{ secret('NAME') }} (masked in logs).")
    params: dict[str, str] = late_template({}, description="Query parameter templates.")
    auth: Auth | None = Field(None, description="basic, bearer, api_key or oauth2 credentials.")
    timeout: Timeouts = Field(default_factory=Timeouts, description="connect, read and total seconds.")
    rate_per_sec: float | None = Field(None, gt=0, description="Requests per second for this component across all "
                                                               "threads (default: runtime.api_rate_per_sec; "
                                                               "neither: unlimited).")
    burst: int = Field(1, ge=1, description="Requests allowed at once after an idle spell (token bucket size).")
    max_in_flight: int = Field(8, ge=1, le=256, description="Requests at once for this component across all "
                                                            "threads (and pooled keep-alive connections).")
    retry: RetryPolicy | None = Field(None, description="Override runtime.retry for this component.")
    follow_redirects: Literal["same_origin", "all", "none"] = Field(
        "same_origin", description="same_origin: follow redirects within the request's scheme, host and port, and "
                                   "refuse others; all: follow any, dropping every secret-carrying header on a "
                                   "cross-origin hop; none: a redirect is an error.")
    max_response_bytes: int = Field(10_000_000, ge=1, description="Larger responses are a permanent failure.")


class CacheConfig(_Strict):
    """In-memory response cache keyed by the rendered request (method, URL, params, body)."""

    ttl_s: float = Field(300.0, gt=0, description="How long a response is reused.")
    max_entries: int = Field(10_000, ge=1, description="Responses kept; the oldest go first.")
