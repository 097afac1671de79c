"""Airflow connections as Sluice credentials: ``secret('airflow:<conn_id>[:<field>]')`` and the
``connection: <conn_id>`` shorthand inside a component block.

Secrets never land in the job dict: ``connection:`` expands into ``{{ secret('airflow:...') }}``
templates for the secret fields, so core resolves them through the secret hook at render time and
masks their values in logs and errors. Airflow is imported inside functions only.
"""

from __future__ import annotations

from typing import Any

from sluice import ConfigError

PREFIX = "airflow:"
ES_TYPES = frozenset({"elasticsearch", "opensearch"})
S3_TYPES = frozenset({"s3"})
# The S3 component fields a connection may fill (sluice_s3.client.S3Connection); also what S3
# staging copies from the job's S3 component.
S3_CONNECTION_FIELDS = ("endpoint_url", "region", "profile", "access_key_id", "secret_access_key", "session_token",
                        "addressing_style", "checksums", "max_pool_connections", "retry_mode", "max_attempts",
                        "connect_timeout_s", "read_timeout_s")


def get_connection(conn_id: str) -> Any:
    """The Airflow connection ``conn_id`` (Task SDK inside a task, the metadata DB/secrets outside).

    Raises ConfigError naming the connection when it is not defined; ImportError without Airflow.
    """
    try:
        from airflow.sdk import Connection
    except ImportError:  # Airflow 2 layout, or no Task SDK
        from airflow.models.connection import Connection  # type: ignore[no-redef]
    try:
        return Connection.get(conn_id)
    except Exception as exc:
        if type(exc).__name__ in ("AirflowNotFoundException", "AirflowRuntimeError") or "not defined" in str(exc):
            raise ConfigError(f"Airflow connection {conn_id!r} is not defined (add it in the UI, with "
                              f"`airflow connections add`, or as AIRFLOW_CONN_{conn_id.upper()})") from None
        raise


def _extra(conn: Any) -> dict[str, Any]:
    extra = getattr(conn, "extra_dejson", None)
    return dict(extra) if isinstance(extra, dict) else {}


def connection_field(conn: Any, field: str) -> Any:
    """One field of a connection: login, password, host, port, schema, conn_type, hosts (URLs built
    from schema/host/port), uri, or ``extra.<key>`` (nested keys with dots). None when unset."""
    if field == "hosts":
        return es_hosts(conn)
    if field == "uri":
        return conn.get_uri()
    if field.startswith("extra."):
        value: Any = _extra(conn)
        for part in field[len("extra."):].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value
    if field in ("login", "password", "host", "port", "schema", "conn_type", "description"):
        return getattr(conn, field, None)
    raise ConfigError(f"secret('airflow:{conn.conn_id}:{field}'): unknown connection field {field!r}; use login, "
                      "password, host, port, schema, hosts, uri or extra.<key>")


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


def es_hosts(conn: Any) -> str:
    """Cluster URLs of an Elasticsearch/OpenSearch connection: host may hold several comma-separated
    hosts, with or without a scheme; the scheme comes from ``extra.scheme``, ``extra.use_ssl`` or schema."""
    extra = _extra(conn)
    scheme = extra.get("scheme") or ("https" if str(extra.get("use_ssl", "")).lower() in ("true", "1") else None)
    if scheme is None:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
    urls = []
    for host in (h.strip() for h in str(conn.host or "").split(",")):
        if not host:
            continue
        url = host if "://" in host else f"{scheme}://{host}"
        if conn.port and url.count(":") < 2:  # no port in the host itself
            url = f"{url}:{conn.port}"
        urls.append(url)
    if not urls:
        raise ConfigError(f"Airflow connection {conn.conn_id!r} has no host")
    return ",".join(urls)


def _ref(conn_id: str, field: str) -> str:
    return "{{ secret('" + f"{PREFIX}{conn_id}:{field}" + "') }}"


def expand_connection(block: dict[str, Any], where: str, conn: Any | None) -> dict[str, Any]:
    """``block`` with its ``connection:`` replaced by the component's own fields.

    With ``conn`` (task time) the fields come from the connection: plain values for hosts, user,
    region and endpoint, ``secret()`` templates for passwords and keys. Without it (parse time, no
    connection lookup) only placeholders for required fields are added, so the block validates.
    Fields written in the block win over the connection's.
    """
    if "connection" not in block:
        return block
    conn_id = block["connection"]
    kind = block.get("type")
    out = {k: v for k, v in block.items() if k != "connection"}
    if not isinstance(conn_id, str) or not conn_id:
        raise ConfigError(f"{where}: connection: needs an Airflow connection id")
    if kind in ES_TYPES:
        fields = _es_fields(conn_id, conn) if conn is not None else {"hosts": _ref(conn_id, "hosts")}
    elif kind in S3_TYPES:
        fields = _s3_fields(conn_id, conn) if conn is not None else {}
    else:
        raise ConfigError(f"{where}: connection: is supported on elasticsearch, opensearch and s3 components, "
                          f"not on type {kind!r}; use secret('airflow:{conn_id}:<field>') in its fields")
    for key, value in fields.items():
        out.setdefault(key, value)
    return out


def _es_fields(conn_id: str, conn: Any) -> dict[str, Any]:
    extra = _extra(conn)
    fields: dict[str, Any] = {"hosts": es_hosts(conn)}
    if extra.get("api_key"):
        fields["api_key"] = _ref(conn_id, "extra.api_key")
    elif conn.password:
        fields["username"] = conn.login
        fields["password"] = _ref(conn_id, "password")
    for key in ("verify_certs", "ca_certs", "flavor", "compat_headers", "aws_sigv4_region"):
        if key in extra:
            value = extra[key]
            if key in ("verify_certs", "compat_headers") and isinstance(value, str):
                value = value.lower() in ("true", "1", "yes")
            fields[key] = value
    return fields


def _s3_fields(conn_id: str, conn: Any) -> dict[str, Any]:
    extra = _extra(conn)
    fields: dict[str, Any] = {}
    if conn.login:
        fields["access_key_id"] = _ref(conn_id, "login")
    if conn.password:
        fields["secret_access_key"] = _ref(conn_id, "password")
    if extra.get("aws_session_token"):
        fields["session_token"] = _ref(conn_id, "extra.aws_session_token")
    region = extra.get("region_name") or extra.get("region")
    if region:
        fields["region"] = region
    endpoint = extra.get("endpoint_url") or ((extra.get("service_config") or {}).get("s3") or {}).get("endpoint_url")
    if not endpoint and conn.host and "://" in str(conn.host):
        endpoint = str(conn.host)
    if endpoint:
        fields["endpoint_url"] = endpoint
    if extra.get("profile_name"):
        fields["profile"] = extra["profile_name"]
    return fields


def expand_job(raw: dict[str, Any], lookup: bool) -> dict[str, Any]:
    """A copy of the raw job with every component block's ``connection:`` expanded.

    ``lookup=False`` (parse time) adds placeholders without touching Airflow's connections.
    """
    out = dict(raw)
    cache: dict[str, Any] = {}

    def conn_of(block: dict[str, Any]) -> Any:
        if not lookup or "connection" not in block:
            return None
        conn_id = str(block["connection"])
        if conn_id not in cache:
            cache[conn_id] = get_connection(conn_id)
        return cache[conn_id]

    for key in ("source", "destination", "dead_letter", "checkpoints"):
        block = raw.get(key)
        if isinstance(block, dict):
            out[key] = expand_connection(block, key, conn_of(block))
    transform = raw.get("transform")
    if isinstance(transform, dict) and isinstance(transform.get("steps"), list):
        steps = [expand_connection(s, f"transform.steps[{i}]", conn_of(s)) if isinstance(s, dict) else s
                 for i, s in enumerate(transform["steps"])]
        out["transform"] = {**transform, "steps": steps}
    return out
