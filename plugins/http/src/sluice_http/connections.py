"""``connection: <id>`` on an HTTP component: an orchestrator's HTTP connection mapped onto
``base_url``, ``auth`` and ``headers`` (``sluice_connection_fields``).

Pure mapping, no client import. Credentials are never copied as values: they become
``connection.secret(...)`` templates that core resolves, and masks, at run time.
"""

from __future__ import annotations

from typing import Any

from sluice.connections import Connection


def http_fields(connection: Connection) -> dict[str, Any]:
    """The fields of ``connection`` (an Airflow ``http`` connection or alike).

    ``base_url`` from ``schema`` (the scheme, default https), ``host`` (or a host holding a URL) and
    ``port``; login and password become basic auth, ``extra.token`` bearer auth (``extra.auth_type:
    bearer`` with the password as the token also works); other string extras in ``extra.headers``
    become headers.
    """
    if connection.placeholder:
        return {"base_url": f"https://{connection.host}"}
    fields: dict[str, Any] = {}
    host = connection.host or ""
    if host:
        if "://" not in host:
            scheme = connection.schema or "https"
            host = f"{scheme}://{host}"
        if connection.port:
            host = f"{host.rstrip('/')}:{connection.port}"
        fields["base_url"] = host
    extra = connection.extra
    if extra.get("token"):
        fields["auth"] = {"type": "bearer", "token": connection.secret("extra.token")}
    elif str(extra.get("auth_type", "")).lower() == "bearer" and connection.has_password:
        fields["auth"] = {"type": "bearer", "token": connection.secret("password")}
    elif connection.login and connection.has_password:
        fields["auth"] = {"type": "basic", "username": connection.login, "password": connection.secret("password")}
    headers = extra.get("headers")
    if isinstance(headers, dict):
        fields["headers"] = {str(k): str(v) for k, v in headers.items()}
    return fields
