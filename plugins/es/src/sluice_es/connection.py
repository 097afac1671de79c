"""An orchestrator connection (``connection: <id>`` in a block) mapped onto this plugin's fields.

Pure logic on core's neutral ``Connection``: no client library, no I/O, so it is tested as is.
Secrets never become values here: the API key and the password are ``connection.secret(...)``
templates that core resolves (and masks) at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sluice import ConfigError

if TYPE_CHECKING:
    from sluice.connections import Connection

# extras copied as they are; booleans given as strings (as connection forms store them) are parsed
PLAIN_EXTRAS = ("verify_certs", "ca_certs", "flavor", "compat_headers", "aws_sigv4_region")
FLAG_EXTRAS = frozenset({"verify_certs", "compat_headers"})


def flag(value: Any) -> bool:
    """A boolean from a connection extra: ``true``/``1``/``yes``/``on`` (any case) or a real bool."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def hosts(connection: Connection) -> list[str]:
    """Cluster URLs: ``host`` may hold several comma-separated hosts, with or without a scheme.

    A host without scheme takes ``extra.scheme``, else https when ``extra.use_ssl`` is set, else the
    connection's ``schema`` when it is http or https, else http. ``port`` is added to hosts that
    name none.
    """
    extra = connection.extra
    scheme = extra.get("scheme") or ("https" if flag(extra.get("use_ssl", False)) else None)
    if not scheme:
        scheme = connection.schema if connection.schema in ("http", "https") else "http"
    urls = []
    for host in (h.strip() for h in str(connection.host or "").split(",")):
        if not host:
            continue
        parts = urlsplit(host if "://" in host else f"{scheme}://{host}")
        try:
            has_port = parts.port is not None
        except ValueError:
            raise ConfigError(f"connection {connection.conn_id!r}: host {host!r} has an invalid port") from None
        if connection.port and not has_port:
            parts = parts._replace(netloc=f"{parts.netloc}:{connection.port}")
        urls.append(parts.geturl())
    if not urls:
        raise ConfigError(f"connection {connection.conn_id!r} has no host (an elasticsearch/opensearch block "
                          "needs the cluster's address)")
    return urls


def connection_fields(connection: Connection) -> dict[str, Any]:
    """The ``elasticsearch``/``opensearch`` fields ``connection`` fills; the block's own fields win."""
    if connection.placeholder:  # not looked up (DAG parsing, validate): just enough to validate
        return {"hosts": f"http://{connection.host}"}
    extra = connection.extra
    fields: dict[str, Any] = {"hosts": hosts(connection)}
    if extra.get("api_key"):
        fields["api_key"] = connection.secret("extra.api_key")
    elif connection.has_password:
        if connection.login:
            fields["username"] = connection.login
        fields["password"] = connection.secret("password")
    for key in PLAIN_EXTRAS:
        if key in extra:
            value = extra[key]
            fields[key] = flag(value) if key in FLAG_EXTRAS and isinstance(value, str) else value
    return fields
