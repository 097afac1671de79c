"""Airflow connections for Sluice: ``connection: <conn_id>`` in a component block, and
``secret('airflow:<conn_id>[:<field>]')`` in any field.

This module knows Airflow, not the components: it hands a connection over as core's neutral
``sluice.connections.Connection``, and the plugin owning the component maps it onto its fields
(``sluice_connection_fields``). Secret values never land in the job dict: the plugins write
``secret('airflow:...')`` templates, resolved here at render time and masked by core. Airflow is
imported inside functions only.
"""

from __future__ import annotations

from typing import Any

from sluice import ConfigError
from sluice.connections import Connection

PREFIX = "airflow:"
FIELDS = ("login", "password", "host", "port", "schema", "conn_type", "description")


def get_connection(conn_id: str) -> Any:
    """The Airflow connection ``conn_id`` (Task SDK inside a task, the metadata DB/secrets outside).

    Raises ConfigError naming the connection when it is not defined; ImportError without Airflow.
    """
    try:
        from airflow.sdk import Connection as AirflowConnection
    except ImportError:  # Airflow 2 layout, or no Task SDK
        from airflow.models.connection import Connection as AirflowConnection  # type: ignore[no-redef]
    try:
        return AirflowConnection.get(conn_id)
    except Exception as exc:
        if type(exc).__name__ in ("AirflowNotFoundException", "AirflowRuntimeError") or "not defined" in str(exc):
            raise ConfigError(f"Airflow connection {conn_id!r} is not defined (add it in the UI, with "
                              f"`airflow connections add`, or as AIRFLOW_CONN_{conn_id.upper()})") from None
        raise


def _extra(conn: Any) -> dict[str, Any]:
    extra = getattr(conn, "extra_dejson", None)
    return dict(extra) if isinstance(extra, dict) else {}


def lookup(conn_id: str) -> Connection | None:
    """``conn_id`` as core's neutral connection; None when Airflow is not installed."""
    try:
        conn = get_connection(conn_id)
    except ImportError:
        return None
    port = getattr(conn, "port", None)
    return Connection(conn_id=conn_id, conn_type=conn.conn_type, host=conn.host or None,
                      port=int(port) if port else None, login=conn.login or None, schema=conn.schema or None,
                      extra=_extra(conn), has_password=bool(conn.password), secret_prefix=PREFIX)


def connection_field(conn: Any, field: str) -> Any:
    """One field of a connection: login, password, host, port, schema, conn_type, uri, or
    ``extra.<key>`` (nested keys with dots). None when unset."""
    if field == "uri":
        return conn.get_uri()
    if field.startswith("extra."):
        value: Any = _extra(conn)
        for part in field[len("extra."):].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value
    if field in FIELDS:
        return getattr(conn, field, None)
    raise ConfigError(f"secret('airflow:{conn.conn_id}:{field}'): unknown connection field {field!r}; use login, "
                      "password, host, port, schema, uri or extra.<key>")


def resolve_secret(name: str) -> str | None:
    """``airflow:<conn_id>`` → the password; ``airflow:<conn_id>:<field>`` → that field.

    None for names without the ``airflow:`` prefix or when Airflow is not installed, so the next
    resolver (core's environment lookup) answers.
    """
    if not name.startswith(PREFIX):
        return None
    conn_id, _, field = name[len(PREFIX):].partition(":")
    if not conn_id:
        raise ConfigError(f"secret({name!r}): name the connection, e.g. airflow:my_es or airflow:my_es:login")
    try:
        conn = get_connection(conn_id)
    except ImportError:
        return None
    value = connection_field(conn, field or "password")
    if value is None or value == "":
        raise ConfigError(f"secret({name!r}): Airflow connection {conn_id!r} has no {field or 'password'}")
    return value if isinstance(value, str) else str(value)
