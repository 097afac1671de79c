"""Configuration of ``http_enrich``: the shared HTTP options plus the body, caching and mapping."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sluice import late_template
from sluice_transforms.expressions import ExpressionText
from sluice_transforms.paths import split_path

from .config import CacheConfig, HttpOptions


class HttpEnrichConfig(HttpOptions):
    """One HTTP call per record (or per distinct request, with the cache), mapped into the record."""

    url: str = late_template(description="Request URL, a per-record template: "
                                         "https://api.example.com/users/{{ record.user_id }}.")
    json_body: Any = late_template(None, alias="json", description="JSON body: any structure whose strings are "
                                                                   "templates.")
    body: str | None = late_template(None, description="Raw body template (instead of json).")
    cache: CacheConfig | None = Field(None, description="{ttl_s, max_entries}: reuse responses to equal requests.")
    into: str | None = Field(None, description="Field path that receives the whole response (parsed JSON, or text).")
    select: dict[str, str] | None = Field(None, description="Field path → JMESPath into the response, e.g. "
                                                            "{country: 'data.country.code'}.")
    when: ExpressionText | None = Field(None, description="Only enrich records for which this expression is "
                                                          "true; others pass unchanged.")
    on_error: Literal["dead_letter", "keep", "fail"] = Field(
        "dead_letter", description="On a permanent failure (4xx, retries exhausted): dead-letter the record, keep "
                                   "it unchanged, or fail the run.")
    response: Literal["auto", "json", "text"] = Field("auto", description="How to read the body (auto: JSON when "
                                                                          "it parses as JSON, else text).")

    @field_validator("into")
    @classmethod
    def _into(cls, value: str | None) -> str | None:
        if value is not None:
            split_path(value)
        return value

    @field_validator("select")
    @classmethod
    def _select(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        import jmespath
        from jmespath.exceptions import JMESPathError

        for field, path in (value or {}).items():
            split_path(field)
            try:
                jmespath.compile(path)
            except JMESPathError as exc:
                raise ValueError(f"select.{field}: invalid JMESPath {path!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _mapping(self) -> HttpEnrichConfig:
        if self.into is None and not self.select:
            raise ValueError("set 'into' (a field for the whole response) or 'select' (fields from JMESPath)")
        if self.json_body is not None and self.body is not None:
            raise ValueError("give 'json' or 'body', not both")
        return self
