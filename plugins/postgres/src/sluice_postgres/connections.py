"""``connection: <id>`` on a postgres component: an orchestrator's connection (an Airflow
``postgres`` connection) mapped onto the connection fields (``sluice_connection_fields``).

Pure mapping, no client import. The password never becomes a value: it is a
``connection.secret("password")`` template that core resolves, and masks, at run time.
"""

from __future__ import annotations

from typing import Any

from sluice.connections import Connection

# extra keys of an Airflow postgres connection that are libpq parameters of the same name
TLS_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def postgres_fields(connection: Connection) -> dict[str, Any]:
    """The postgres fields of ``connection``: host, port, login → user, schema → database (Airflow
    keeps the database there), password, and from ``extra`` sslmode, sslrootcert, sslcert, sslkey,
    application_name and connect_timeout (→ connect_timeout_s)."""
    if connection.placeholder:
        return {}  # every connection field is optional: nothing is needed to validate the block
    extra = connection.extra
    fields: dict[str, Any] = {}
    if connection.host:
        fields["host"] = connection.host
    if connection.port:
        fields["port"] = connection.port
    if connection.login:
        fields["user"] = connection.login
    if connection.schema:
        fields["database"] = connection.schema
    if connection.has_password:
        fields["password"] = connection.secret("password")
    for name in TLS_EXTRAS:
        if extra.get(name):
            fields[name] = str(extra[name])
    if extra.get("application_name"):
        fields["application_name"] = str(extra["application_name"])
    if extra.get("connect_timeout"):
        fields["connect_timeout_s"] = int(extra["connect_timeout"])
    return fields
