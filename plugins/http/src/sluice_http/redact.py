"""URLs and headers as they may be shown: no secret in a log line, a reason or a dead letter.

A query parameter whose name looks like a credential (``token``, ``api_key``, ``signature``...) or
that the auth layer added is shown as ``***``, and every value ``secret()`` resolved is masked too.
A header is *secret-carrying* when its name looks like a credential, its template calls
``secret()``, or its value holds a resolved secret: such headers never cross to another origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sluice import secrets as secret_values

MASK = secret_values.MASK
CREDENTIAL_NAME = re.compile(r"token|key|secret|passw|signature|^sig$|auth|session|cookie|credential", re.I)
"""Query parameter and header names whose values are credentials whatever their origin."""


def looks_secret(name: str) -> bool:
    """True for a parameter or header name that usually carries a credential."""
    return bool(CREDENTIAL_NAME.search(name))


def redact_url(url: str, params: Iterable[tuple[str, str]] = (), secret_params: Iterable[str] = ()) -> str:
    """``url`` plus ``params`` with credential-like query values replaced by ``***``."""
    hidden = {p.lower() for p in secret_params}
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params]
    shown = [(k, MASK if k.lower() in hidden or looks_secret(k) else v) for k, v in query]
    netloc = parts.netloc
    if "@" in netloc:  # user:password@host
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    text = urlunsplit((parts.scheme, netloc, parts.path, urlencode(shown, safe="*/:"), parts.fragment))
    return secret_values.mask(text)


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def secret_headers(headers: dict[str, str], templates: dict[str, str] | None = None) -> frozenset[str]:
    """Lower-cased names of the headers that carry a secret (see the module docstring)."""
    out = set()
    for name, value in headers.items():
        template = (templates or {}).get(name, "")
        if looks_secret(name) or "secret(" in template or secret_values.mask(value) != value:
            out.add(name.lower())
    return frozenset(out)
