"""Request templates: url, method, headers, params and body, compiled once and rendered many times.

The source renders them per partition (``partition`` in scope), the sink and http_enrich per
record (``record``). A part that does not mention that variable (a secret, ``ds``) is rendered
once, when the component opens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from .client import Request
from .redact import looks_secret, secret_headers

if TYPE_CHECKING:
    from sluice.context import RunContext

    from .client import HttpClient
    from .config import HttpOptions

Render = Callable[..., Any]


class RequestTemplate:
    """The request of one component; ``render(**scope)`` builds a ``Request``."""

    def __init__(self, ctx: RunContext, options: HttpOptions, client: HttpClient, prefix: str, scope: str,
                 json_body: Any = None, body: str | None = None) -> None:
        self.ctx, self.prefix, self.scope, self.client = ctx, prefix, scope, client
        self.url = self._template(options.url, "url")
        self.method = self._template(options.method, "method")
        self.headers = [(k, self._template(v, f"headers.{k}")) for k, v in options.headers.items()]
        self.params = [(k, self._template(v, f"params.{k}")) for k, v in options.params.items()]
        self.json = _tree(json_body, self._template, "json") if json_body is not None else None
        self.body = self._template(body, "body") if body is not None else None
        # secret-carrying headers are known from the templates: a credential-like name, or secret() inside
        static = {k: f() for k, f in self.headers if self.scope not in options.headers[k]}
        self.secret_headers = frozenset({k.lower() for k, v in options.headers.items()
                                         if looks_secret(k) or "secret(" in v} | secret_headers(static))

    def _template(self, source: str, where: str) -> Render:
        render = self.ctx.compile(source, f"{self.prefix}.{where}")
        if self.scope not in source:  # nothing per record or partition: render once
            value = render()
            return lambda **_: value
        return render

    def render(self, **scope: Any) -> Request:
        """The request for ``scope`` (``record=...`` or ``partition=...``)."""
        method = str(self.method(**scope)).strip().upper()
        url = self.client.resolve(self.url(**scope))
        params = tuple((k, f(**scope)) for k, f in self.params)
        headers = {k: f(**scope) for k, f in self.headers}
        content: bytes | None = None
        if self.json is not None:
            content = orjson.dumps(self.json(**scope))
            headers.setdefault("content-type", "application/json")
        elif self.body is not None:
            content = str(self.body(**scope)).encode()
        return Request(method, url, params, headers, content, self.secret_headers)

    def json_value(self, **scope: Any) -> Any:
        """The JSON body as a value (the source adds pagination parameters to it)."""
        return self.json(**scope) if self.json is not None else None


def _tree(value: Any, template: Callable[[str, str], Render], where: str) -> Render:
    """A JSON body whose string leaves are templates."""
    if isinstance(value, str):
        return template(value, where)
    if isinstance(value, dict):
        items = [(k, _tree(v, template, f"{where}.{k}")) for k, v in value.items()]
        return lambda **scope: {k: f(**scope) for k, f in items}
    if isinstance(value, list):
        parts = [_tree(v, template, f"{where}[{i}]") for i, v in enumerate(value)]
        return lambda **scope: [f(**scope) for f in parts]
    return lambda **_: value
