"""The auth layer: what each request carries for the configured credentials.

Every value comes from the job's ``secret()`` templates and is remembered for masking; an OAuth2
access token is remembered as soon as it arrives. The layer adds its headers (or its query
parameter) per attempt, so a refreshed token is used by the next retry, and it tells the client
which headers it added: those never follow a redirect to another origin.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

from sluice import secrets as secret_values

from .errors import HttpPermanent, HttpTransient, excerpt, parse_retry_after

if TYPE_CHECKING:
    from .config import Auth


class AuthLayer:
    """Headers and query parameters for one component's credentials (none: an empty layer)."""

    def __init__(self, auth: Auth | None) -> None:
        self.auth = auth
        self.headers: dict[str, str] = {}
        self.params: list[tuple[str, str]] = []
        self.oauth: OAuth2Token | None = None
        if auth is None:
            return
        if auth.type == "basic":
            password = secret_values.remember(auth.password.get_secret_value() if auth.password else "")
            raw = f"{auth.username}:{password}".encode()
            self.headers["authorization"] = "Basic " + secret_values.remember(base64.b64encode(raw).decode())
        elif auth.type == "bearer":
            token = secret_values.remember(auth.token.get_secret_value() if auth.token else "")
            self.headers["authorization"] = f"Bearer {token}"
        elif auth.type == "api_key":
            key = secret_values.remember(auth.key.get_secret_value() if auth.key else "")
            if auth.location == "header":
                self.headers[(auth.name or "X-Api-Key").lower()] = key
            else:
                self.params.append((auth.name or "api_key", key))
        else:
            self.oauth = OAuth2Token(auth)

    @property
    def header_names(self) -> frozenset[str]:
        """Headers this layer adds (lower-case): always secret-carrying."""
        return frozenset([*self.headers, *(["authorization"] if self.oauth else [])])

    @property
    def param_names(self) -> frozenset[str]:
        """Query parameters this layer adds: always redacted."""
        return frozenset(name for name, _ in self.params)

    def apply(self, client: Any, headers: dict[str, str]) -> str | None:
        """Add the credentials to ``headers`` (fetching an OAuth2 token when needed); returns the
        access token used, if any, so a 401 can invalidate exactly that one."""
        headers.update(self.headers)
        if self.oauth is None:
            return None
        token = self.oauth.get(client)
        headers["authorization"] = f"Bearer {token}"
        return token


class OAuth2Token:
    """An OAuth2 client-credentials token, fetched on first use and refreshed before it expires.

    The refresh happens ``refresh_before_s`` before expiry (at most half the token's lifetime), under
    a lock, so many threads share one token request. ``invalidate`` drops a token the API refused.
    """

    def __init__(self, auth: Auth) -> None:
        self.auth = auth
        self._secret = secret_values.remember(auth.client_secret.get_secret_value() if auth.client_secret else "")
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self.fetched = 0

    def get(self, client: Any) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._refresh_at:
                self._fetch(client)
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self, client: Any) -> None:
        import httpx

        auth = self.auth
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        headers = {"accept": "application/json"}
        if auth.client_auth == "basic":
            raw = f"{auth.client_id}:{self._secret}".encode()
            headers["authorization"] = "Basic " + secret_values.remember(base64.b64encode(raw).decode())
        else:
            form.update(client_id=auth.client_id or "", client_secret=self._secret)
        where = f"oauth2 token request to {auth.token_url}"
        started = time.monotonic()
        try:
            response = client.post(auth.token_url, data=form, headers=headers)
        except httpx.TimeoutException as exc:
            raise HttpTransient(f"{where}: timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise HttpTransient(f"{where}: connection failed: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise HttpTransient(f"{where}: HTTP {status}", status,
                                parse_retry_after(response.headers.get("retry-after")), excerpt(response.content))
        if status >= 400:
            body = excerpt(response.content)
            raise HttpPermanent(f"{where}: HTTP {status} {response.reason_phrase}: {body}".rstrip(": "), status, body)
        try:
            data = orjson.loads(response.content)
            token = str(data["access_token"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise HttpPermanent(f"{where}: the answer has no access_token: {excerpt(response.content)}",
                                status) from None
        lifetime = float(data.get("expires_in") or 3600)
        self._token = secret_values.remember(token)
        self._refresh_at = started + lifetime - min(auth.refresh_before_s, lifetime / 2)
        self.fetched += 1
