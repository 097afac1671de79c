"""``connection: <id>`` on an S3 component: an orchestrator's AWS connection mapped onto the
S3 connection fields (``sluice_connection_fields``).

Pure mapping, no client import. Keys are never copied as values: they become
``connection.secret(...)`` templates that core resolves, and masks, at run time.
"""

from __future__ import annotations

from typing import Any

from sluice.connections import Connection


def s3_fields(connection: Connection) -> dict[str, Any]:
    """The S3 fields of ``connection`` (an Airflow ``aws`` connection or alike).

    Keys from login / password / ``extra.aws_session_token``; ``region`` from ``extra.region_name``
    (or ``extra.region``); ``endpoint_url`` from ``extra.endpoint_url``, else
    ``extra.service_config.s3.endpoint_url``, else a host holding a URL; ``profile`` from
    ``extra.profile_name``. A connection without keys leaves credentials to the AWS default chain.
    """
    if connection.placeholder:
        return {}  # every S3 field is optional: nothing is needed to validate the block
    extra = connection.extra
    fields: dict[str, Any] = {}
    if connection.login:
        fields["access_key_id"] = connection.secret("login")
    if connection.has_password:
        fields["secret_access_key"] = connection.secret("password")
    if extra.get("aws_session_token"):
        fields["session_token"] = connection.secret("extra.aws_session_token")
    region = extra.get("region_name") or extra.get("region")
    if region:
        fields["region"] = region
    service_config = extra.get("service_config") if isinstance(extra.get("service_config"), dict) else {}
    s3_config = service_config.get("s3") if isinstance(service_config.get("s3"), dict) else {}
    endpoint = extra.get("endpoint_url") or s3_config.get("endpoint_url")
    if not endpoint and connection.host and "://" in connection.host:
        endpoint = connection.host
    if endpoint:
        fields["endpoint_url"] = endpoint
    if extra.get("profile_name"):
        fields["profile"] = extra["profile_name"]
    return fields
