"""Pydantic config models of the PostgreSQL source and sink (they feed ``sluice schema``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from sluice import ComponentConfig

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
Mode = Literal["append", "upsert", "replace_interval"]


class PgConnectionConfig(ComponentConfig):
    """Where the server is and how to log in; shared by the source and the sink.

    ``dsn`` and the separate fields combine: a field that is set wins over the same part of the DSN.
    """

    dsn: SecretStr | None = Field(
        None, description="libpq connection string or URI (postgresql://user@host:5432/db?sslmode=require); "
                          "a secret, as it may hold the password. Default: the fields below, then libpq's "
                          "environment (PGHOST, PGUSER...)."
    )
    host: str | None = Field(None, description="Host name, IP address, or the directory of a Unix socket.")
    port: int | None = Field(None, ge=1, le=65535, description="Port (default 5432).")
    database: str | None = Field(None, description="Database name (libpq's dbname).")
    user: str | None = Field(None, description="Role to log in as.")
    password: SecretStr | None = Field(None, description="Password, e.g. \"{{ secret('PG_PASSWORD') }}\".")
    sslmode: SslMode | None = Field(
        None, description="TLS: disable, allow, prefer (libpq's default), require, verify-ca or verify-full "
                          "(checks the certificate and the host name: use it across networks)."
    )
    sslrootcert: str | None = Field(None, description="CA certificate file (PEM) that signs the server's certificate.")
    sslcert: str | None = Field(None, description="Client certificate file (PEM) for certificate login.")
    sslkey: str | None = Field(None, description="The client certificate's private key file.")
    application_name: str | None = Field(
        None, description="Shown in pg_stat_activity and the server's logs. Default: sluice/<job name>."
    )
    connect_timeout_s: int = Field(10, ge=1, description="Seconds to wait for a connection (libpq connect_timeout).")
    params: dict[str, str] = Field(
        default_factory=dict, description="More libpq connection parameters, e.g. {target_session_attrs: "
                                          "read-write, keepalives_idle: \"30\"}."
    )

    @field_validator("params", mode="before")
    @classmethod
    def _text_values(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class ColumnSpec(ComponentConfig):
    """Where one column's value comes from, and (for ``create_table``) its SQL type."""

    field: str | None = Field(
        None, description="Record field, a dotted path for nested fields (latency.ms); default: the column name."
    )
    value: Literal["field", "record", "rest"] = Field(
        "field", description="field: the record field; record: the whole record (a json/jsonb column); rest: "
                             "the fields no other column takes (a json/jsonb column)."
    )
    type: str | None = Field(
        None, description="SQL type (bigint, text, timestamptz, numeric(12,2), jsonb, text[]...); needed with "
                          "create_table, checked against the table otherwise."
    )
    nullable: bool = Field(True, description="create_table: false adds NOT NULL.")

    @model_validator(mode="after")
    def _field_only_for_fields(self) -> ColumnSpec:
        if self.value != "field" and self.field is not None:
            raise ValueError(f"value: {self.value} takes no field")
        return self


class PgSinkConfig(PgConnectionConfig):
    """Which table to load, how, and which record field goes into which column."""

    table: str = Field(description="Target table, optionally schema-qualified (analytics.events); templated.")
    mode: Mode = Field(
        "append", description="append: insert; upsert: insert or update by key; replace_interval: replace the "
                              "rows of the run's interval (by time_column) atomically at commit."
    )
    key: list[str] = Field(
        default_factory=list, description="upsert: the columns of the conflict key (a primary key or unique index "
                                          "on exactly these columns)."
    )
    update_columns: list[str] | None = Field(
        None, description="upsert: the columns an existing row takes from the record; default: every mapped "
                          "column outside the key ([] inserts new keys only)."
    )
    time_column: str | None = Field(
        None, description="replace_interval: the column whose value places a row in a run's interval "
                          "(timestamptz, timestamp or date)."
    )
    columns: Literal["auto"] | dict[str, str | ColumnSpec] = Field(
        "auto", description="auto: every column of the table from the record field of the same name (generated "
                            "and identity columns are left to the server); or a mapping column → field path "
                            "(a string) or {field, value, type, nullable}."
    )
    create_table: bool = Field(
        False, description="Create the table when it does not exist, from the declared column types (and the "
                           "key's unique index for upsert). Otherwise a missing table or column fails the run "
                           "before any data moves."
    )
    checkpoint_schema: str | None = Field(
        None, description="Schema of the sluice_checkpoints table (and replace_interval's stage tables); default: "
                          "the target table's schema."
    )
    stage_retention: timedelta = Field(
        timedelta(days=3), description="replace_interval: keep a committed run's stage table this long (seconds "
                                       "or ISO 8601), so a load task cleared meanwhile can be re-run alone; 0: "
                                       "drop it at commit."
    )

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _mode_needs(self) -> PgSinkConfig:
        if self.mode == "upsert" and not self.key:
            raise ValueError("mode upsert needs key: the columns of the conflict key")
        if self.mode != "upsert" and (self.key or self.update_columns is not None):
            raise ValueError(f"key and update_columns are for mode upsert, not {self.mode}")
        if self.mode == "replace_interval" and not self.time_column:
            raise ValueError("mode replace_interval needs time_column: the column that places a row in an interval")
        if self.mode != "replace_interval" and self.time_column:
            raise ValueError(f"time_column is for mode replace_interval, not {self.mode}")
        if self.create_table and self.columns == "auto":
            raise ValueError("create_table needs the columns declared with their types (columns: {name: {type: ...}})")
        if self.create_table and isinstance(self.columns, dict):
            untyped = [c for c, s in self.columns.items()
                       if not isinstance(s, ColumnSpec) or (s.type is None and s.value == "field")]
            if untyped:
                raise ValueError(f"create_table needs a type for every column; missing for {', '.join(untyped)}")
        return self


class PgSourceConfig(PgConnectionConfig):
    """What to read, in how many key ranges, and how to map types to JSON."""

    table: str | None = Field(None, description="Table or view to read, optionally schema-qualified.")
    query: str | None = Field(
        None, description="A SELECT to read instead of a table, templated with the interval "
                          "(WHERE ts >= '{{ data_interval_start }}' AND ts < '{{ data_interval_end }}')."
    )
    columns: list[str] | None = Field(None, description="table: only these columns (default: all).")
    where: str | None = Field(None, description="table: an SQL condition rows must meet (templated).")
    key: list[str] | None = Field(
        None, description="Columns that order the rows uniquely and are never NULL: pages and checkpoints follow "
                          "them (keyset). Default: the table's primary key. A query without key resumes by row "
                          "count, which needs a deterministic ORDER BY."
    )
    partition_by: str | None = Field(
        None, description="Split the read into key ranges of this column (a number, date or time; other types "
                          "split at quantiles), read in parallel."
    )
    partitions: int = Field(1, ge=1, le=1024, description="How many ranges of partition_by to read in parallel.")
    numeric: Literal["string", "number"] = Field(
        "string", description="numeric/decimal values as exact strings (\"12.50\"), or as JSON numbers "
                              "(floats: large or very precise values lose digits)."
    )

    @field_validator("key", "columns", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _what(self) -> PgSourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give either table or query")
        if self.query is not None and (self.columns or self.where):
            raise ValueError("columns and where are for table; write them into the query")
        if self.partitions > 1 and not self.partition_by:
            raise ValueError("partitions > 1 needs partition_by: the column to split by")
        return self
