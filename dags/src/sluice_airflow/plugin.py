"""Entry-point module of sluice-airflow: resolves ``secret('airflow:<conn_id>[:<field>]')``.

Airflow is imported only when such a secret is resolved; outside Airflow the hook returns None
and core's environment lookup applies.
"""

from __future__ import annotations

from typing import Any

from sluice import hookimpl


@hookimpl
def sluice_resolve_secret(name: str) -> str | None:
    """An Airflow connection's password (``airflow:my_es``) or field (``airflow:my_es:login``,
    ``airflow:my_es:extra.api_key``, ``airflow:my_es:hosts``)."""
    from .connections import resolve_secret

    return resolve_secret(name)


@hookimpl
def sluice_expand_block(kind: str, block: dict[str, Any]) -> dict[str, Any] | None:
    """Expand ``connection: <conn_id>`` in a component block (``sluice run``/``sluice validate``).

    With Airflow installed and the connection defined, its fields are filled in as under Airflow;
    otherwise placeholders that resolve through ``secret('airflow:...')`` keep the block valid, and
    resolving them names the missing connection.
    """
    if "connection" not in block:
        return None
    from .connections import expand_connection, get_connection

    conn = None
    try:
        conn = get_connection(str(block["connection"]))
    except Exception:  # no Airflow here, or the connection is not defined: placeholders
        conn = None
    return expand_connection(block, kind, conn)
