"""What can go wrong talking to a cluster, as Sluice errors that name the host and never a secret.

Client exceptions (elasticsearch / elastic-transport / opensearch-py) are translated in one place,
``translate``, so the source and the sink report the same failure the same way.
"""

from __future__ import annotations

import re
from typing import Any

from sluice import PermanentError, TransientError
from sluice.secrets import mask


class ClusterUnreachable(TransientError):
    """No connection to the cluster (refused, timed out, DNS)."""


class ClusterBusy(TransientError):
    """The cluster answered 429 or 5xx: try again later."""


class SearchContextMissing(TransientError):
    """A PIT or scroll expired (or was closed): reopen it and continue from the last position."""


class AuthenticationFailed(PermanentError):
    """401: the credentials were refused."""


class AccessDenied(PermanentError):
    """403: the credentials lack a privilege."""


class IndexNotFound(PermanentError):
    """The index, alias or pattern does not exist."""


class RequestRejected(PermanentError):
    """Any other 4xx: the request is wrong and will be wrong again."""


class PayloadTooLarge(RequestRejected):
    """413: the request body is over the cluster's (or a proxy's) size limit."""


class ScrollShrank(PermanentError):
    """A resumed scroll found fewer documents than were already delivered: the index changed."""


class TlsFailed(PermanentError):
    """The TLS handshake failed (certificate, CA bundle)."""


class AliasSwapRefused(PermanentError):
    """``swap_alias`` cannot go on safely: a plain index holds the alias's name, loads disagree on
    the index they built, or the index to publish is gone. The message says what to do."""


def status_of(exc: BaseException) -> int | None:
    """HTTP status of a client error (elasticsearch or opensearch-py), or None for network errors."""
    meta = getattr(exc, "meta", None)
    status = getattr(meta, "status", None) if meta is not None else getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def error_of(exc: BaseException) -> tuple[str, str]:
    """``(type, reason)`` of a client error's JSON body; the root cause when there is one."""
    body: Any = getattr(exc, "body", None)
    if body is None:
        body = getattr(exc, "info", None)
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        caused = err.get("caused_by")
        root = (err.get("root_cause") or [None])[0]
        best = caused if isinstance(caused, dict) and caused.get("type") else err
        if best is err and isinstance(root, dict) and root.get("type"):
            best = root
        return str(best.get("type") or err.get("type") or "error"), str(best.get("reason") or err.get("reason") or "")
    if isinstance(err, str):
        return err, ""
    return type(exc).__name__, str(body or exc)[:300]


def _chain(exc: BaseException) -> str:
    """The text of an error and of what caused it (clients wrap the urllib3 error one or two levels deep)."""
    texts, seen = [], set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        texts.append(str(e))
        todo += [e.__cause__, e.__context__, *(getattr(e, "errors", ()) or ()), getattr(e, "info", None),
                 getattr(e, "reason", None)]
    return " | ".join(texts)


def _network_reason(exc: BaseException) -> str:
    text = str(exc)
    lowered = _chain(exc).lower()
    if "refused" in lowered:
        return "connection refused"
    if "timed out" in lowered or "timeout" in lowered:
        return "timed out"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return "host name not resolved"
    if "reset by peer" in lowered or "remote end closed" in lowered or "connection aborted" in lowered:
        return "connection closed by the server"
    return re.sub(r"<[^>]*>:?\s*", "", text).strip()[:200] or type(exc).__name__


def translate(exc: BaseException, product: str, where: str, doing: str) -> Exception:
    """The Sluice error for a client exception raised while ``doing`` something at ``where``."""
    name = type(exc).__name__
    status = status_of(exc)
    if status is None:
        if "Tls" in name or "SSL" in name:
            return TlsFailed(mask(f"TLS connection to {product} at {where} failed: {_network_reason(exc)} "
                                  "(check verify_certs / ca_certs)"))
        if "Connection" in name or "Timeout" in name or isinstance(exc, ConnectionError | TimeoutError):
            return ClusterUnreachable(mask(f"cannot connect to {product} at {where}: {_network_reason(exc)}"))
        if "UnsupportedProduct" in name:
            return RequestRejected(f"the server at {where} is not Elasticsearch; set flavor: opensearch")
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    etype, reason = error_of(exc)
    detail = mask(f"{etype}: {reason}" if reason else etype)
    if status == 401:
        return AuthenticationFailed(f"authentication failed for {where} (check the credentials)")
    if status == 403:
        return AccessDenied(f"access denied at {where} while {doing}: {detail}")
    if status == 404 and "search_context_missing" in mask(str(getattr(exc, "body", None) or getattr(exc, "info", ""))):
        return SearchContextMissing(f"{product} at {where}: the search context expired while {doing}: {detail}")
    if status == 404 and etype == "index_not_found_exception":
        return IndexNotFound(f"{product} at {where}: {doing}: no such index ({reason or etype})")
    if status in (408, 429) or status >= 500:
        return ClusterBusy(f"{product} at {where} answered {status} while {doing}: {detail}")
    if status == 413:
        return PayloadTooLarge(f"{product} at {where} refused {doing} as too large (413); lower max_bytes")
    return RequestRejected(f"{product} at {where} refused {doing} ({status}): {detail}")
