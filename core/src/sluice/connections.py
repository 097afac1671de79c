"""``connection: <id>`` in a component block: an orchestrator's connection mapped onto the
component's own fields by the plugin that owns the component.

An adapter (sluice-airflow) looks connections up through ``sluice_lookup_connection`` and hands
them over as a neutral ``Connection``; the component's plugin maps it through
``sluice_connection_fields``. Secrets never enter the job dict: the plugin writes
``connection.secret(field)`` templates, which core resolves through the secret hook at render
time and masks in logs and errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .registry import Kind, Registry

KEY = "connection"


@dataclass(frozen=True)
class Connection:
    """An orchestrator connection, as the plugin owning a component sees it.

    Plain fields hold values; secret fields (the password, secret extras) are read through
    ``secret(field)``, a ``{{ secret('...') }}`` template naming this connection's field.
    ``placeholder`` is set when the connection was not looked up (DAG parsing, ``sluice
    validate``): map only what the block needs to validate.
    """

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    has_password: bool = False
    secret_prefix: str = ""
    placeholder: bool = False

    def secret(self, name: str = "password") -> str:
        """A template resolving field ``name`` (``password``, ``login``, ``extra.<key>``) at run time."""
        return "{{ secret('" + f"{self.secret_prefix}{self.conn_id}:{name}" + "') }}"

    @classmethod
    def unresolved(cls, conn_id: str) -> Connection:
        """A stand-in for validating without looking the connection up."""
        return cls(conn_id, host=f"connection-{conn_id}.invalid", placeholder=True)


def expand_connection(block: dict[str, Any], kind: Kind, where: str, registry: Registry,
                      lookup: bool = True) -> dict[str, Any]:
    """``block`` with ``connection:`` replaced by the fields its component's plugin maps from it.

    ``lookup=False`` validates without asking the orchestrator (placeholders). The block's
    ``type`` is checked first, so a misspelled type gets the usual "did you mean" message.
    """
    if KEY not in block:
        return block
    conn_id = block[KEY]
    if not isinstance(conn_id, str) or not conn_id:
        raise ConfigError(f"{where}: connection: needs a connection id")
    type_name = str(block.get("type"))
    registry.get(kind, type_name, where)  # an unknown type is the first thing to say
    hook = registry.hook()
    conn = hook.sluice_lookup_connection(conn_id=conn_id) if lookup else Connection.unresolved(conn_id)
    if conn is None:
        raise ConfigError(f"{where}: connection {conn_id!r}: no installed plugin provides connections here "
                          "(connections come from an orchestrator, e.g. sluice-airflow inside Airflow); "
                          "write the component's fields instead")
    fields = hook.sluice_connection_fields(component_type=type_name, connection=conn)
    if fields is None:
        raise ConfigError(f"{where}: type {type_name!r} does not take connection:; write its fields, with "
                          f"secret('...') for credentials")
    out = {k: v for k, v in block.items() if k != KEY}
    for key, value in fields.items():
        out.setdefault(key, value)
    return out
