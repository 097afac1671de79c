"""Connection settings shared by every S3 component, the boto3 client built from them, and the
translation of botocore errors into Sluice's typed errors (one line, naming bucket and endpoint).

boto3/botocore are imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator

from sluice import ComponentConfig, ConfigError, PermanentError, SluiceError, TransientError
from sluice.urls import redact_url, remember_credentials

if TYPE_CHECKING:
    from sluice.metrics import Metrics


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")`` (no leading or trailing slash)."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r} (expected s3://bucket/prefix)")
    return parts.netloc, parts.path.strip("/")


def _check_uri(uri: str) -> str:
    parse_uri(uri)
    return uri


S3Uri = Annotated[str, AfterValidator(_check_uri)]
"""A config field holding ``s3://bucket/prefix``, checked when the job is validated."""


def join_key(*parts: str) -> str:
    """Join key segments with single slashes, ignoring empty ones."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class S3Connection(ComponentConfig):
    """How to reach S3: credentials, endpoint, region and client tuning (shared by every S3 component)."""

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, R2, moto), e.g. http://localhost:9000. Empty: AWS."
    )
    region: str | None = Field(None, description="AWS region; default: the AWS chain (AWS_DEFAULT_REGION, profile).")
    profile: str | None = Field(None, description="Named profile from ~/.aws/config; default: the AWS default chain.")
    access_key_id: SecretStr | None = Field(
        None, description="Explicit access key id, usually \"{{ secret('AWS_ACCESS_KEY_ID') }}\"."
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Explicit secret key, usually \"{{ secret('AWS_SECRET_ACCESS_KEY') }}\"."
    )
    session_token: SecretStr | None = Field(None, description="Session token for temporary credentials.")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="auto: path-style when endpoint_url is set (MinIO, moto), virtual-hosted on AWS."
    )
    checksums: Literal["when_supported", "when_required"] = Field(
        "when_supported",
        description="Request/response CRC checksums; when_required for S3-compatible stores that reject them.",
    )
    max_pool_connections: int = Field(32, ge=1, description="HTTP connections the client keeps (shared by threads).")
    retry_mode: Literal["standard", "adaptive", "legacy"] = Field(
        "standard", description="botocore retry mode; adaptive also rate-limits on throttling."
    )
    max_attempts: int = Field(3, ge=1, description="botocore attempts per request (Sluice retries whole operations "
                                                   "on top, following runtime.retry).")
    connect_timeout_s: float = Field(10.0, gt=0, description="Connect timeout per request.")
    read_timeout_s: float = Field(60.0, gt=0, description="Read timeout per request (and per streamed chunk).")

    @field_validator("endpoint_url", "region", "profile", "access_key_id", "secret_access_key", "session_token",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # an unset value rendered by a template arrives as "" and means "use the default chain"
        return None if value == "" else value


def endpoint_label(conn: S3Connection) -> str:
    """Where requests go, for error messages (never credentials, even written into the URL)."""
    if conn.endpoint_url:
        remember_credentials(conn.endpoint_url)
        return redact_url(conn.endpoint_url)
    return f"AWS S3 ({conn.region or 'default region'})"


# One boto3 session per set of credentials in the process: a session caches the service model, so
# the source, sink, dead letters and checkpoints of a job share the ~0.15 s it takes to load it.
_sessions: dict[tuple[str, str | None, str | None], Any] = {}
_sessions_lock = threading.Lock()


def make_client(conn: S3Connection, metrics: Metrics | None = None) -> Any:
    """A boto3 S3 client for ``conn``; thread-safe, so one per component serves all partitions.

    botocore's own retries are counted into the run's ``retries`` metric through an event hook.
    """
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    style = conn.addressing_style
    if style == "auto":
        style = "path" if conn.endpoint_url else "virtual"
    config = Config(
        max_pool_connections=conn.max_pool_connections,
        retries={"mode": conn.retry_mode, "total_max_attempts": conn.max_attempts},  # first try included
        connect_timeout=conn.connect_timeout_s,
        read_timeout=conn.read_timeout_s,
        s3={"addressing_style": style},
        request_checksum_calculation=conn.checksums,
        response_checksum_validation=conn.checksums,
    )

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    try:
        credentials = (secret(conn.access_key_id), secret(conn.secret_access_key), secret(conn.session_token))
        with _sessions_lock:  # boto3 sessions are not thread-safe; the clients they make are
            key = (hashlib.sha256(repr(credentials).encode()).hexdigest(), conn.region, conn.profile)
            session = _sessions.get(key)
            if session is None:
                session = _sessions[key] = boto3.session.Session(
                    aws_access_key_id=credentials[0], aws_secret_access_key=credentials[1],
                    aws_session_token=credentials[2], region_name=conn.region, profile_name=conn.profile)
            client = session.client("s3", endpoint_url=conn.endpoint_url or None, config=config)
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(f"s3: AWS profile {conn.profile!r} is not configured (~/.aws/config)") from None
    except ValueError as exc:  # an invalid endpoint URL
        raise ConfigError(f"s3: invalid endpoint_url {conn.endpoint_url!r}: {exc}") from None
    if metrics is not None:
        _count_retries(client, metrics)
    return client


def _count_retries(client: Any, metrics: Metrics) -> None:
    """Count botocore's own retries into the run's ``retries``: botocore creates the request again
    for every attempt and numbers the attempt in the request context."""

    def created(request: Any = None, **_: Any) -> None:
        attempt = ((getattr(request, "context", None) or {}).get("retries") or {}).get("attempt") or 1
        if attempt > 1:
            metrics.add("retries")

    client.meta.events.register("request-created.s3", created)


# S3 error codes that will not change on retry, with what to tell the user.
_PERMANENT: dict[str, str] = {
    "NoSuchBucket": "bucket does not exist",
    "AccessDenied": "access denied (check the IAM policy for this bucket/prefix)",
    "AllAccessDisabled": "access to the bucket is disabled",
    "InvalidAccessKeyId": "the access key id is not valid (check the credentials)",
    "SignatureDoesNotMatch": "the secret access key does not match (check the credentials)",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "AuthorizationHeaderMalformed": "the credentials or region are not valid for this bucket",
    "PermanentRedirect": "the bucket is in another region (set region:)",
    "NoSuchKey": "object does not exist",
    "InvalidBucketName": "invalid bucket name",
}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}


def s3_error(exc: BaseException, what: str, conn: S3Connection, bucket: str, key: str | None = None) -> SluiceError:
    """A one-line Sluice error for a botocore/network failure of ``what`` (e.g. "listing", "reading").

    Names the endpoint, bucket and key; never credentials. 5xx, throttling and network errors are
    ``TransientError`` (retried), the rest ``PermanentError``.
    """
    import botocore.exceptions as bex

    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
    at = f" at {endpoint_label(conn)}"
    if isinstance(exc, SluiceError):
        return exc
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error") or {}
        code = str(err.get("Code") or "")
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        if code in _PERMANENT:
            return PermanentError(f"s3: {what} {where}{at} failed: {_PERMANENT[code]} ({code})")
        label = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(f"s3: {what} {where}{at} failed: {label}")
        if status == 403:
            return PermanentError(f"s3: {what} {where}{at} failed: access denied ({label})")
        if status == 404 and not key:
            return PermanentError(f"s3: {what} {where}{at} failed: bucket does not exist ({label})")
        message = err.get("Message")
        return PermanentError(f"s3: {what} {where}{at} failed: {label}" + (f": {message}" if message else ""))
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return PermanentError(f"s3: {what} {where}{at} failed: no AWS credentials found (set a profile, the "
                              "AWS_* environment variables, or access_key_id/secret_access_key)")
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError):
        return TransientError(f"s3: {what} {where} failed: cannot connect to {endpoint_label(conn)}")
    if isinstance(exc, bex.BotoCoreError | ConnectionError | TimeoutError | OSError):
        return TransientError(f"s3: {what} {where}{at} failed: {type(exc).__name__}: {exc}")
    return PermanentError(f"s3: {what} {where}{at} failed: {type(exc).__name__}: {exc}")


def is_transient(exc: BaseException) -> bool:
    """Retry predicate for ``sluice.retry.retry_call`` around S3 calls wrapped with ``s3_error``."""
    return isinstance(exc, TransientError)


def call(fn: Any, what: str, conn: S3Connection, bucket: str, key: str | None = None) -> Any:
    """Run ``fn()`` translating botocore/network errors with ``s3_error``."""
    try:
        return fn()
    except SluiceError:
        raise
    except Exception as exc:
        raise s3_error(exc, what, conn, bucket, key) from exc
