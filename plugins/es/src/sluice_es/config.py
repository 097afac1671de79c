"""Pydantic config models of the Elasticsearch/OpenSearch source and sink (they feed ``sluice schema``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from sluice import ComponentConfig, late_template

Flavor = Literal["elasticsearch", "opensearch"]


class ConnectionConfig(ComponentConfig):
    """Where the cluster is and how to authenticate; shared by the source and the sink."""

    hosts: list[str] = Field(
        description="Cluster URLs, e.g. [\"https://es1:9200\", \"https://es2:9200\"] (a single string is accepted)."
    )
    flavor: Flavor | None = Field(
        None, description="elasticsearch or opensearch; detected from `GET /` when not set."
    )
    username: str | None = Field(None, description="Basic auth user.")
    password: SecretStr | None = Field(None, description="Basic auth password, e.g. \"{{ secret('ES_PASSWORD') }}\".")
    api_key: SecretStr | None = Field(
        None, description="Elasticsearch API key: the encoded form, or `id:api_key` (encoded for you)."
    )
    bearer_token: SecretStr | None = Field(None, description="Sent as `Authorization: Bearer <token>`.")
    aws_sigv4_region: str | None = Field(
        None, description="Sign requests with AWS SigV4 for Amazon OpenSearch Service in this region "
                          "(credentials from the AWS default chain; needs boto3)."
    )
    aws_sigv4_service: Literal["es", "aoss"] = Field(
        "es", description="SigV4 service name: es (managed domains) or aoss (OpenSearch Serverless)."
    )
    verify_certs: bool = Field(True, description="Verify the server's TLS certificate.")
    ca_certs: str | None = Field(None, description="Path to a CA bundle (PEM) to verify the server with.")
    client_cert: str | None = Field(None, description="Path to a client certificate (PEM) for mutual TLS.")
    client_key: str | None = Field(None, description="Path to the client certificate's private key (PEM).")
    request_timeout_s: float = Field(60.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    compat_headers: bool | None = Field(
        None,
        description="Elasticsearch flavour only: send versioned `compatible-with` media types. None (default): "
                    "only when the server's major version equals the client's; false sends plain "
                    "application/json (ES 7, proxies, OpenSearch-compatible servers).",
    )
    http_compress: bool = Field(False, description="gzip request bodies (helps on slow links, costs CPU).")

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("hosts")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one host URL")
        return [h if "://" in h else f"http://{h}" for h in value]  # the elasticsearch client needs a scheme

    @model_validator(mode="after")
    def _one_auth(self) -> ConnectionConfig:
        given = [n for n in ("password", "api_key", "bearer_token", "aws_sigv4_region") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"choose one way to authenticate, not {' and '.join(given)}")
        if self.password is not None and not self.username:
            raise ValueError("password is set but username is not")
        return self


class EsSourceConfig(ConnectionConfig):
    """What to read from the cluster and how to page through it."""

    index: list[str] = Field(description="Index names, patterns (logs-*) or aliases; a list or a comma string.")
    query: dict[str, Any] | None = Field(
        None, description="Query DSL (the value of `query`), templated, e.g. a range over {{ ds }}..{{ next_ds }}. "
                          "Default: match_all."
    )
    fields: list[str] | None = Field(
        None, description="`_source` filtering: only these fields (wildcards allowed). Default: the whole _source."
    )
    include_id: bool = Field(True, description="Add the document's `_id` to each record (the ES sink uses it).")
    include_index: bool = Field(False, description="Add the document's `_index` to each record.")
    page_size: int = Field(
        1000, ge=1, le=10_000, description="Hits per request; one page is one batch (capped by runtime.batch_size)."
    )
    pagination: Literal["pit", "scroll"] | None = Field(
        None, description="pit (point in time + search_after) or scroll. Default: pit where the cluster supports "
                          "it (Elasticsearch 7.12+, OpenSearch 2.4+), else scroll."
    )
    slices: int = Field(
        1, ge=1, le=1024, description="Split the read into this many sliced PITs/scrolls, run as parallel partitions."
    )
    keep_alive: str = Field("5m", description="How long the cluster keeps the PIT/scroll between two pages.")
    sort: list[Any] | None = Field(
        None, description="PIT only: sort of the search_after walk. Default [\"_shard_doc\"] (fastest). Give a sort "
                          "that is unique per document to resume correctly after the PIT expired on a changing index."
    )

    @field_validator("index", mode="before")
    @classmethod
    def _index_names(cls, value: Any) -> Any:
        if not isinstance(value, str | list):
            return value
        names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip()]
        if not names:
            raise ValueError("needs at least one index name or pattern")
        return names


class EsSinkConfig(ConnectionConfig):
    """Where and how to bulk-write records."""

    index: str | None = late_template(
        None, description="Target index, rendered per record (e.g. logs-{{ record.day }}); default: the record's "
                          "`_index` field (an ES→ES reindex that keeps index names). With swap_alias: the alias "
                          "readers query, one per run (e.g. logs-{{ ds }})."
    )
    op_type: Literal["index", "create", "update", "delete"] = Field(
        "index", description="index (replace), create (skip ids that exist: counted as written), update "
                             "(partial update with doc_as_upsert) or delete."
    )
    id: str = Field(
        "_id", description="Record field holding the document id (`_id`, the default, is removed from the stored "
                           "document), or `auto` to let the cluster assign ids (a re-run then duplicates documents)."
    )
    id_fields: list[str] | None = Field(
        None, description="Make the id a stable hash (SHA-1) of these fields' values instead; overrides `id`."
    )
    routing: str | None = late_template(None, description="Custom routing, rendered per record.")
    pipeline: str | None = Field(None, description="Ingest pipeline to run on every document.")
    batch_size: int = Field(2000, ge=1, description="Documents per bulk request (at most).")
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Bytes per bulk request body (at most).")
    retry_on_conflict: int = Field(3, ge=0, description="update only: retries of a version conflict, server side.")
    refresh: bool = Field(
        False, description="Refresh every index the run wrote when it commits (after a successful run; in finalize "
                           "for a staged run), so the data is searchable at once."
    )
    create_index: dict[str, Any] | None = Field(
        None, description="Create each target index that does not exist before its first write, with this body "
                          "({settings: ..., mappings: ...}); {} creates it with the cluster's defaults."
    )

    swap_alias: bool = Field(
        False, description="Rebuild the index each run: write into a new index and, at commit, point the alias "
                           "`index` at it and delete the one it replaces, in one atomic step; a failed or rejected "
                           "run never becomes visible. `index` must name one alias per run (e.g. logs-{{ ds }})."
    )

    @model_validator(mode="after")
    def _ids_make_sense(self) -> EsSinkConfig:
        if self.op_type in ("update", "delete") and self.id == "auto" and not self.id_fields:
            raise ValueError(f"op_type {self.op_type} needs document ids: set id or id_fields, not id: auto")
        return self

    @model_validator(mode="after")
    def _one_alias_per_run(self) -> EsSinkConfig:
        if not self.swap_alias:
            return self
        if not self.index:
            raise ValueError("swap_alias needs index: the alias readers query, named from the run "
                             "(e.g. logs-{{ ds }})")
        if "record" in template_names(self.index):
            raise ValueError(f"swap_alias needs one index per run, but index {self.index!r} is rendered per record; "
                             "name it from the run's variables only (e.g. logs-{{ ds }}), or use a job per alias")
        if self.op_type == "delete":
            raise ValueError("swap_alias builds a new, empty index each run: op_type delete has nothing to delete")
        if "aliases" in (self.create_index or {}):
            raise ValueError("swap_alias manages the aliases of the index it builds: create_index.aliases would "
                             "show that index to readers before the run commits")
        return self


def template_names(text: str) -> set[str]:
    """The variables a Jinja template reads (parsed, never rendered); none when it does not parse
    (rendering reports that error with its place in the job)."""
    from jinja2 import Environment, TemplateSyntaxError, meta

    try:
        return set(meta.find_undeclared_variables(Environment().parse(text)))
    except TemplateSyntaxError:
        return set()
