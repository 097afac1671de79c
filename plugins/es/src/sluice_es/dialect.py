"""The few places where Elasticsearch and OpenSearch differ, behind one small interface.

Client classes, how they are built, and the point-in-time endpoints differ; search, scroll and
bulk bodies are the same. Both clients are imported here lazily (inside methods), never at
module import. Every call takes and returns plain dicts; bodies we build ourselves go out as
bytes, so neither client serialises them again.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import orjson

from .errors import status_of

BULK_FILTER = "errors,items.*.status,items.*.error.type,items.*.error.reason"
_VERSIONED = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+)(?:;\s*compatible-with=\d+)?")


class Dialect:
    """Calls that differ by flavour. ``product`` names the cluster in messages."""

    flavor: ClassVar[str]
    product: ClassVar[str]

    def make_client(self, hosts: list[str], headers: dict[str, str], options: dict[str, Any]) -> Any:
        """A client for ``hosts`` with ``headers`` on every request (auth), sized and configured by ``options``."""
        raise NotImplementedError

    def supports_pit(self, version: tuple[int, int]) -> bool:
        """Whether the server has point in time with a ``_shard_doc`` tiebreaker."""
        raise NotImplementedError

    def open_pit(self, client: Any, indices: list[str], keep_alive: str) -> str:
        """Open a point in time over ``indices`` and return its id."""
        raise NotImplementedError

    def close_pit(self, client: Any, pit_id: str) -> None:
        """Close a point in time (free its resources on the cluster)."""
        raise NotImplementedError

    # The calls below are the same for both clients (same REST API, same keyword names).
    def info(self, client: Any) -> dict[str, Any]:
        """``GET /``: name, version and distribution of the cluster."""
        return dict(client.info())

    def search(self, client: Any, body: dict[str, Any], *, index: list[str] | None, filter_path: str | None,
               scroll: str | None = None) -> dict[str, Any]:
        """One search request; opens a scroll when ``scroll`` (its keep-alive) is given."""
        params: dict[str, Any] = {"filter_path": filter_path} if filter_path else {}
        if scroll:
            params["scroll"] = scroll
        if index:
            params["index"] = ",".join(index)
        return client.search(body=body, **params)  # type: ignore[no-any-return]

    def scroll(self, client: Any, scroll_id: str, keep_alive: str, filter_path: str | None) -> dict[str, Any]:
        """The next page of a scroll."""
        return client.scroll(body={"scroll_id": scroll_id, "scroll": keep_alive},  # type: ignore[no-any-return]
                             filter_path=filter_path)

    def clear_scroll(self, client: Any, scroll_id: str) -> None:
        """Free a scroll on the cluster."""
        client.clear_scroll(body={"scroll_id": [scroll_id]})

    def bulk(self, client: Any, payload: bytes, pipeline: str | None) -> dict[str, Any]:
        """Send a ready NDJSON bulk body; the response keeps only what per-item handling reads."""
        params: dict[str, Any] = {"filter_path": BULK_FILTER}
        if pipeline:
            params["pipeline"] = pipeline
        return client.bulk(body=payload, **params)  # type: ignore[no-any-return]

    def index_exists(self, client: Any, name: str) -> bool:
        """Whether an index or alias of that name exists."""
        return bool(client.indices.exists(index=name))

    def create_index(self, client: Any, name: str, body: dict[str, Any]) -> None:
        """Create an index with ``body`` (settings, mappings, aliases)."""
        client.indices.create(index=name, body=body)

    def refresh(self, client: Any, names: list[str]) -> None:
        """Make recent writes to ``names`` searchable."""
        # an index whose every document was dead-lettered may not exist: nothing to refresh there
        client.indices.refresh(index=",".join(names), ignore_unavailable=True)

    def aliases_of(self, client: Any, name: str) -> dict[str, Any]:
        """``GET /{name}/_alias``: every concrete index ``name`` stands for (the index itself, an
        alias's targets, a pattern's matches) with its aliases; ``{}`` when nothing has that name."""
        try:
            return dict(client.indices.get_alias(index=name))
        except Exception as exc:
            if status_of(exc) == 404:
                return {}
            raise

    def update_aliases(self, client: Any, actions: list[dict[str, Any]]) -> None:
        """``POST /_aliases``: apply ``actions`` (add, remove, remove_index) atomically, all or none."""
        client.indices.update_aliases(body={"actions": actions})

    def delete_indices(self, client: Any, names: list[str]) -> None:
        """Delete concrete indices by name (never a pattern or an alias); missing ones are fine."""
        client.indices.delete(index=",".join(names), ignore_unavailable=True)


class OpenSearchDialect(Dialect):
    """OpenSearch 1/2/3 and Amazon OpenSearch Service, through opensearch-py."""

    flavor = "opensearch"
    product = "OpenSearch"

    def make_client(self, hosts: list[str], headers: dict[str, str], options: dict[str, Any]) -> Any:
        from opensearchpy import OpenSearch
        from opensearchpy.serializer import JSONSerializer

        class OrjsonSerializer(JSONSerializer):  # type: ignore[misc]
            """opensearch-py's serializer on orjson (the stdlib json is several times slower)."""

            def loads(self, s: Any) -> Any:
                return orjson.loads(s)

            def dumps(self, data: Any) -> Any:
                if isinstance(data, str | bytes):
                    return data
                return orjson.dumps(data, default=self.default)

        kwargs: dict[str, Any] = {
            "headers": headers, "timeout": options["timeout"], "max_retries": 0, "retry_on_timeout": False,
            "pool_maxsize": options["pool"], "serializer": OrjsonSerializer(), "http_compress": options["compress"],
            "verify_certs": options["verify_certs"], "ssl_show_warn": False,
        }
        for key in ("ca_certs", "client_cert", "client_key"):
            if options.get(key):
                kwargs[key] = options[key]
        if options.get("aws_region"):
            import boto3
            from opensearchpy import Urllib3AWSV4SignerAuth

            credentials = boto3.Session().get_credentials()
            kwargs["http_auth"] = Urllib3AWSV4SignerAuth(credentials, options["aws_region"], options["aws_service"])
        return OpenSearch(hosts=hosts, **kwargs)

    def supports_pit(self, version: tuple[int, int]) -> bool:
        return version >= (2, 4)

    def open_pit(self, client: Any, indices: list[str], keep_alive: str) -> str:
        return str(client.create_pit(index=",".join(indices), params={"keep_alive": keep_alive})["pit_id"])

    def close_pit(self, client: Any, pit_id: str) -> None:
        client.delete_pit(body={"pit_id": [pit_id]})


class ElasticsearchDialect(Dialect):
    """Elasticsearch 7.10+/8/9 through the official client, with plain JSON when asked."""

    flavor = "elasticsearch"
    product = "Elasticsearch"

    def make_client(self, hosts: list[str], headers: dict[str, str], options: dict[str, Any]) -> Any:
        from elasticsearch import Elasticsearch
        from elasticsearch.serializer import OrjsonSerializer

        node_class = options["node_class"]
        kwargs: dict[str, Any] = {
            "headers": headers, "request_timeout": options["timeout"], "max_retries": 0, "retry_on_timeout": False,
            "retry_on_status": (), "connections_per_node": options["pool"], "serializer": OrjsonSerializer(),
            "http_compress": options["compress"], "verify_certs": options["verify_certs"], "node_class": node_class,
        }
        if not options["verify_certs"]:
            kwargs["ssl_show_warn"] = False
        for key in ("ca_certs", "client_cert", "client_key"):
            if options.get(key):
                kwargs[key] = options[key]
        return Elasticsearch(hosts=hosts, **kwargs)

    def supports_pit(self, version: tuple[int, int]) -> bool:
        return version >= (7, 12)

    def open_pit(self, client: Any, indices: list[str], keep_alive: str) -> str:
        return str(client.open_point_in_time(index=",".join(indices), keep_alive=keep_alive)["id"])

    def close_pit(self, client: Any, pit_id: str) -> None:
        client.close_point_in_time(id=pit_id)

    def bulk(self, client: Any, payload: bytes, pipeline: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"filter_path": BULK_FILTER}
        if pipeline:
            params["pipeline"] = pipeline
        return client.bulk(operations=payload, **params)  # type: ignore[no-any-return]

    def scroll(self, client: Any, scroll_id: str, keep_alive: str, filter_path: str | None) -> dict[str, Any]:
        return client.scroll(scroll_id=scroll_id, scroll=keep_alive,  # type: ignore[no-any-return]
                             filter_path=filter_path)

    def clear_scroll(self, client: Any, scroll_id: str) -> None:
        client.clear_scroll(scroll_id=scroll_id)

    def create_index(self, client: Any, name: str, body: dict[str, Any]) -> None:
        client.indices.create(index=name, **body)

    def update_aliases(self, client: Any, actions: list[dict[str, Any]]) -> None:
        client.indices.update_aliases(actions=actions)


def es_node_class() -> type:
    """A urllib3 node class for the elasticsearch client, made per cluster.

    ``plain_json`` (a class attribute, flipped once the server version is known) turns the
    client's versioned media types (``application/vnd.elasticsearch+json; compatible-with=9``)
    back into plain ``application/json``: ES 7, older majors, proxies and OpenSearch-compatible
    servers reject the versioned ones. Sluice checks the product itself from ``GET /``, so a
    response without ``X-Elastic-Product`` (ES before 7.14, compatible servers) is marked as
    Elasticsearch instead of failing the client's product check.
    """
    from elastic_transport import Urllib3HttpNode

    class SluiceNode(Urllib3HttpNode):  # type: ignore[misc]
        plain_json: ClassVar[bool] = True

        def perform_request(self, method: str, target: str, body: bytes | None = None, headers: Any = None,
                            **kwargs: Any) -> Any:
            if headers is not None and self.plain_json:
                headers = headers.copy()
                for name in ("accept", "content-type"):
                    value = headers.get(name)
                    if value and "vnd.elasticsearch" in value:
                        headers[name] = _VERSIONED.sub(r"application/\1", value)
            response = super().perform_request(method, target, body=body, headers=headers, **kwargs)
            if "x-elastic-product" not in response.meta.headers:
                response.meta.headers["x-elastic-product"] = "Elasticsearch"
            return response

    return SluiceNode
