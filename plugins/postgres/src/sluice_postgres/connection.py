"""Connecting to PostgreSQL and saying what went wrong, in one place for the source and the sink.

``classify`` is the one decision on what is retried: connection failures, serialization failures,
deadlocks and server shutdowns become ``TransientError`` (the engine retries them with backoff);
everything else is a ``PermanentError`` naming the server, never a password. ``Pool`` keeps one
connection per concurrent partition; a connection that broke is never handed out again.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sluice import PermanentError, TransientError
from sluice.retry import retry_call
from sluice.secrets import mask

from .config import PgConnectionConfig

if TYPE_CHECKING:
    import psycopg

    from sluice import RunContext

T = TypeVar("T")

# SQLSTATEs worth another try: connection exceptions (class 08), serialization failure, deadlock,
# the server shutting down or starting, too many connections, out of memory/disk for the moment.
TRANSIENT_STATES = {"40001", "40P01", "57P01", "57P02", "57P03", "53000", "53100", "53200", "53300", "55P03",
                    "58000", "58030", "XX001"}
# Connection failures libpq reports as text (no SQLSTATE) that will not pass by waiting.
PERMANENT_CONNECT = ("password authentication failed", "no password supplied", "authentication failed",
                     "does not exist", "certificate", "pg_hba.conf", "permission denied", "invalid connection option",
                     "sslmode", "server does not support ssl", "invalid port", "invalid integer value")


class ServerUnreachable(TransientError):
    """No connection to the server (refused, timed out, reset, shutting down)."""


class ServerBusy(TransientError):
    """Serialization failure, deadlock or a lack of resources: the same statement may pass later."""


class LoginRefused(PermanentError):
    """The server refused the login (password, role, database, pg_hba.conf, TLS)."""


class StatementFailed(PermanentError):
    """A statement failed for a reason that retrying will not change (permissions, a missing table)."""


def conninfo(cfg: PgConnectionConfig, application_name: str) -> str:
    """The libpq connection string: ``dsn`` with every field that is set on top of it."""
    from psycopg.conninfo import make_conninfo

    fields: dict[str, Any] = {
        "host": cfg.host, "port": cfg.port, "dbname": cfg.database, "user": cfg.user,
        "password": cfg.password.get_secret_value() if cfg.password is not None else None,
        "sslmode": cfg.sslmode, "sslrootcert": cfg.sslrootcert, "sslcert": cfg.sslcert, "sslkey": cfg.sslkey,
        "application_name": cfg.application_name or application_name,
        "connect_timeout": cfg.connect_timeout_s, **cfg.params,
    }
    dsn = cfg.dsn.get_secret_value() if cfg.dsn is not None else ""
    try:
        return make_conninfo(dsn, **{k: v for k, v in fields.items() if v is not None and v != ""})
    except Exception as exc:  # a malformed DSN: never show it, it may hold the password
        raise LoginRefused(f"postgres: the dsn is not a valid connection string or URI ({type(exc).__name__})") \
            from None


def where(info: str) -> str:
    """``user@host:port/dbname`` of a connection string, for messages (never the password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(info)
    except Exception:
        return "postgres"
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or "5432")
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


def classify(exc: BaseException, doing: str, at: str) -> Exception:
    """A psycopg error as a Sluice error: transient (retried) or permanent, naming the server."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    state = getattr(exc, "sqlstate", None) or ""
    text = " ".join(str(exc).split())
    message = mask(f"postgres {at}: {doing} failed: {text}" + (f" (SQLSTATE {state})" if state else ""))
    if state in ("28P01", "28000") or state.startswith("3D"):
        return LoginRefused(message)
    if state in TRANSIENT_STATES or state.startswith("08"):
        kind = ServerUnreachable if state.startswith(("08", "57")) else ServerBusy
        return kind(message)
    if not state and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        lowered = text.lower()
        if any(p in lowered for p in PERMANENT_CONNECT) and "server closed" not in lowered:
            return LoginRefused(message)
        return ServerUnreachable(message)
    return StatementFailed(message)


def is_broken(conn: psycopg.Connection[Any]) -> bool:
    """True when the connection can no longer be used (closed, or lost mid-transaction)."""
    from psycopg import pq

    return bool(conn.closed or conn.broken or conn.pgconn.status != pq.ConnStatus.OK)


class Connector:
    """Makes configured connections: session settings, orjson for json values, retries on connect."""

    def __init__(self, cfg: PgConnectionConfig, ctx: RunContext) -> None:
        self.info = conninfo(cfg, f"sluice/{ctx.job_name}"[:63])
        self.where = where(self.info)
        self.ctx = ctx

    def connect(self, autocommit: bool = True, retry: bool = True) -> psycopg.Connection[Any]:
        """A new connection, retried while the server is unreachable (under ``runtime.retry``)
        unless the caller retries itself. Autocommit by default: work that must be atomic runs in
        an explicit ``conn.transaction()``."""
        if not retry:
            return self._connect(autocommit)
        return self.retry(lambda: self._connect(autocommit), "connecting")

    def _connect(self, autocommit: bool) -> psycopg.Connection[Any]:
        import psycopg

        try:
            conn = psycopg.connect(self.info, autocommit=True)
        except psycopg.Error as exc:
            raise classify(exc, "connecting", self.where) from None
        try:
            conn.execute("SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'; SET DateStyle = 'ISO'")
            _adapt(conn)
            conn.autocommit = autocommit
        except psycopg.Error as exc:
            conn.close()
            raise classify(exc, "setting up the session", self.where) from None
        return conn

    def retry(self, fn: Callable[[], T], doing: str) -> T:
        """``fn()`` retried on transient errors; psycopg errors leave as Sluice errors."""
        import psycopg

        def attempt() -> T:
            try:
                return fn()
            except psycopg.Error as exc:
                raise classify(exc, doing, self.where) from None

        return retry_call(attempt, self.ctx.retry, metrics=self.ctx.metrics)


def _adapt(conn: psycopg.Connection[Any]) -> None:
    """json values through orjson; dicts and lists as JSON text in any other column (array columns
    get array literals from ``columns``); booleans as true/false. Queries take no list parameters."""
    import orjson
    from psycopg.adapt import Dumper
    from psycopg.types.json import set_json_dumps, set_json_loads

    set_json_dumps(_json_text, context=conn)
    set_json_loads(orjson.loads, context=conn)

    class DictDumper(Dumper):
        """A nested object or list written to a non-json column is stored as its JSON text."""

        def dump(self, obj: Any) -> bytes:
            return orjson.dumps(obj)

    class BoolDumper(Dumper):
        """true/false, which bool columns accept and text columns keep readable."""

        def dump(self, obj: Any) -> bytes:
            return b"true" if obj else b"false"

    conn.adapters.register_dumper(dict, DictDumper)
    conn.adapters.register_dumper(list, DictDumper)  # array columns get array literals (columns.py) instead
    conn.adapters.register_dumper(bool, BoolDumper)


def _json_text(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


class Pool:
    """Idle connections for the partitions a sink writes at once; broken ones are dropped."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one unit of work; it goes back to the pool unless it broke."""
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self.connector.connect()
            with self._lock:
                self._all.append(conn)
        try:
            yield conn
        except BaseException:
            if is_broken(conn):
                self._discard(conn)
            else:
                try:
                    conn.rollback()
                except Exception:
                    self._discard(conn)
                    raise
                self._idle.put(conn)
            raise
        else:
            if is_broken(conn):
                self._discard(conn)
            else:
                self._idle.put(conn)

    def _discard(self, conn: psycopg.Connection[Any]) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        try:
            conn.close()
        except Exception:
            pass

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass
