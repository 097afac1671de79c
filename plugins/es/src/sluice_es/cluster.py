"""One open connection to a cluster: client, dialect, version, and error-translating calls.

``connect`` detects the flavour from ``GET /`` (unless ``flavor:`` is set), builds the matching
client with a connection pool sized for the run's workers, and fails with a clear one-line error
when the cluster is down or refuses the credentials.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sluice.retry import is_transient, retry_call
from sluice.secrets import remember
from sluice.urls import redact_url, remember_credentials

from .config import ConnectionConfig
from .dialect import Dialect, ElasticsearchDialect, OpenSearchDialect, es_node_class
from .errors import RequestRejected, SearchContextMissing, translate

if TYPE_CHECKING:
    from sluice.context import RunContext

T = TypeVar("T")


def worth_retrying(exc: BaseException) -> bool:
    """Transient, except an expired PIT/scroll: it stays expired (the reader reopens it instead)."""
    return is_transient(exc) and not isinstance(exc, SearchContextMissing)


@dataclass
class Cluster:
    """A connected cluster. ``call`` runs a client call and raises Sluice errors naming ``where``."""

    client: Any
    dialect: Dialect
    version: tuple[int, int]
    where: str
    ctx: RunContext

    @property
    def product(self) -> str:
        return self.dialect.product

    def call(self, fn: Callable[[], T], doing: str) -> T:
        """Run ``fn`` once; client exceptions become Sluice errors (transient ones can be retried)."""
        try:
            return fn()
        except Exception as exc:
            raise translate(exc, self.product, self.where, doing) from None

    def retried(self, fn: Callable[[], T], doing: str) -> T:
        """``call`` with jittered backoff on transient errors (idempotent calls only); retries are counted."""
        return retry_call(lambda: self.call(fn, doing), self.ctx.retry, retry_on=worth_retrying,
                          metrics=self.ctx.metrics)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a pool never fails a run
            pass


def auth_headers(config: ConnectionConfig) -> dict[str, str]:
    """The Authorization header for basic, API key or bearer auth (secrets are masked from now on)."""
    if config.password is not None and config.username:
        password = remember(config.password.get_secret_value())
        token = base64.b64encode(f"{config.username}:{password}".encode()).decode()
        return {"authorization": f"Basic {remember(token)}"}
    if config.api_key is not None:
        key = remember(config.api_key.get_secret_value())
        if ":" in key:  # id:api_key as printed by the create-API-key call
            key = remember(base64.b64encode(key.encode()).decode())
        return {"authorization": f"ApiKey {key}"}
    if config.bearer_token is not None:
        return {"authorization": f"Bearer {remember(config.bearer_token.get_secret_value())}"}
    return {}


def _version(info: dict[str, Any]) -> tuple[int, int]:
    number = str((info.get("version") or {}).get("number") or "0.0")
    parts = [int(p) if p.isdigit() else 0 for p in number.split("-")[0].split(".")[:2]]
    major, minor, *_ = [*parts, 0, 0]
    return major, minor


def _is_opensearch(info: dict[str, Any]) -> bool:
    version = info.get("version") or {}
    return version.get("distribution") == "opensearch" or "opensearch" in str(info.get("tagline", "")).lower()


def connect(config: ConnectionConfig, ctx: RunContext) -> Cluster:
    """Connect, detect or check the flavour with ``GET /``, and return the ready cluster."""
    hosts = list(config.hosts)
    for host in hosts:  # credentials inside a URL are secrets too: masked before anything prints
        remember_credentials(host)
    where = ", ".join(redact_url(h) for h in hosts)
    headers = auth_headers(config)
    options = {
        "timeout": config.request_timeout_s, "pool": max(10, ctx.runtime.max_workers * 2 + 2),
        "compress": config.http_compress, "verify_certs": config.verify_certs, "ca_certs": config.ca_certs,
        "client_cert": config.client_cert, "client_key": config.client_key,
        "aws_region": config.aws_sigv4_region, "aws_service": config.aws_sigv4_service,
    }
    flavor = config.flavor or ("opensearch" if config.aws_sigv4_region else None)
    if flavor == "elasticsearch" and config.aws_sigv4_region:
        raise RequestRejected("aws_sigv4_region needs the OpenSearch flavour (Amazon OpenSearch Service)")
    # Without a flavour, probe with opensearch-py: it speaks plain JSON and has no product check,
    # so it can ask any of the supported servers what they are.
    dialect: Dialect = ElasticsearchDialect() if flavor == "elasticsearch" else OpenSearchDialect()
    product = dialect.product if flavor else "Elasticsearch/OpenSearch"
    if flavor == "elasticsearch":
        options["node_class"] = es_node_class()  # elastic-transport is imported only for Elasticsearch
    client = dialect.make_client(hosts, headers, options)

    def info() -> dict[str, Any]:
        try:
            return dialect.info(client)
        except Exception as exc:
            raise translate(exc, product, where, "GET /") from None

    try:
        details = retry_call(info, ctx.retry, retry_on=is_transient, metrics=ctx.metrics)
    except Exception:
        client.close()
        raise
    version = _version(details)
    if flavor is None and not _is_opensearch(details):
        client.close()
        dialect = ElasticsearchDialect()
        options["node_class"] = es_node_class()
        client = dialect.make_client(hosts, headers, options)
    if isinstance(dialect, ElasticsearchDialect):
        from elasticsearch import __versionstr__

        compat = config.compat_headers
        if compat is None:  # versioned types only where the server surely accepts them
            compat = version[0] == int(__versionstr__.split(".")[0])
        options["node_class"].plain_json = not compat
    return Cluster(client, dialect, version, where, ctx)
