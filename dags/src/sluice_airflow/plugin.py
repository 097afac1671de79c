"""Entry-point module of sluice-airflow: Airflow connections for ``connection:`` and
``secret('airflow:<conn_id>[:<field>]')``.

Airflow is imported only when a connection or such a secret is looked up; outside Airflow the
hooks return None, so core's environment lookup (and its clear errors) apply.
"""

from __future__ import annotations

from typing import Any

from sluice import hookimpl


@hookimpl
def sluice_resolve_secret(name: str) -> str | None:
    """An Airflow connection's password (``airflow:my_es``) or field (``airflow:my_es:login``,
    ``airflow:my_es:extra.api_key``)."""
    from .connections import resolve_secret

    return resolve_secret(name)


@hookimpl
def sluice_lookup_connection(conn_id: str) -> Any:
    """The Airflow connection ``conn_id`` for ``connection: <conn_id>`` in a component block."""
    from .connections import lookup

    return lookup(conn_id)
