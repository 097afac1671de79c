"""JSON Schema of a job file, built from the installed plugins' config models (for editors).

Every component block is typed by its plugin's ``Config``; so is every ``format:`` of a file-based
source or sink (a format name, or a block with that format's options) and every exporter block of
``metrics:``.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from .config import JobConfig
from .formats import FormatOption, format_types
from .registry import Kind, Registry


def _variant(klass: type, kind: Kind, names: list[str], defs: dict[str, Any]) -> dict[str, Any]:
    """``klass.Config`` as a block of ``kind`` with ``type: <one of names>``, stored in ``defs``;
    returns the reference to it."""
    prefix = f"{kind}.{klass.type}"  # type: ignore[attr-defined]
    schema = klass.Config.model_json_schema(ref_template=f"#/$defs/{prefix}.{{model}}")  # type: ignore[attr-defined]
    for sub_name, sub in schema.pop("$defs", {}).items():
        defs[f"{prefix}.{sub_name}"] = sub  # prefixed: two plugins may both name a model "Auth"
    schema["properties"] = {"type": {"enum": names, "description": f"{kind.replace('_', ' ')} type"},
                            **schema.get("properties", {})}
    schema["required"] = ["type", *schema.get("required", [])]
    schema["additionalProperties"] = False
    schema.setdefault("title", klass.__name__)
    if klass.__doc__ and "description" not in schema:
        schema["description"] = " ".join(klass.__doc__.split())
    defs[prefix] = schema
    return {"$ref": f"#/$defs/{prefix}"}


def _variants(classes: dict[str, type], kind: Kind, defs: dict[str, Any]) -> list[dict[str, Any]]:
    """One variant per class of ``classes`` (names and aliases mapped to classes), sorted by name."""
    variants = []
    seen: set[type] = set()
    for name in sorted(classes):
        klass = classes[name]
        if klass in seen:
            continue
        seen.add(klass)
        names = [klass.type, *getattr(klass, "aliases", ())]  # type: ignore[attr-defined]
        variants.append(_variant(klass, kind, names, defs))
    return variants


def _format_schema(registry: Registry, defs: dict[str, Any]) -> dict[str, Any]:
    """``format:`` as the installed formats take it: a name, or a block with that format's options."""
    formats = format_types(registry)
    return {"anyOf": [{"enum": sorted(formats), "description": "a format by name, with its default options"},
                      {"oneOf": _variants(formats, "format", defs)}]}


def _type_formats(node: Any, typed: dict[str, Any]) -> None:
    """Replace, everywhere in ``node``, the untyped schema of a ``FormatOption`` field with ``typed``
    (keeping the field's own description and default)."""
    untyped = TypeAdapter(FormatOption).json_schema()["anyOf"]
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("anyOf") == untyped:
                item["anyOf"] = typed["anyOf"]
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _metrics_schema(registry: Registry, defs: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    """``metrics:``: a block per installed exporter, keyed by its type (null turns it off)."""
    exporters = registry.types["metrics_exporter"]
    properties = {}
    for name in sorted(exporters):
        klass = exporters[name]
        prefix = f"metrics_exporter.{name}"
        schema = klass.Config.model_json_schema(ref_template=f"#/$defs/{prefix}.{{model}}")
        for sub_name, sub in schema.pop("$defs", {}).items():
            defs[f"{prefix}.{sub_name}"] = sub
        schema["additionalProperties"] = False
        defs[prefix] = schema
        properties[name] = {"anyOf": [{"$ref": f"#/$defs/{prefix}"}, {"type": "null"}]}
    block = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**{k: v for k, v in field.items() if k != "anyOf"}, "anyOf": [block, {"type": "null"}]}


def job_schema(registry: Registry) -> dict[str, Any]:
    """The job file's schema with every component block typed by its plugin's ``Config``, every
    ``format:`` by the formats' options and ``metrics:`` by the exporters'."""
    schema = JobConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    props = schema["properties"]

    def one_of(kind: Kind) -> dict[str, Any]:
        return {"oneOf": _variants(registry.types[kind], kind, defs)}

    props["source"] = one_of("source")
    props["destination"] = one_of("sink")
    props["dead_letter"] = {"anyOf": [props["destination"], {"type": "null"}]}
    props["checkpoints"] = {"anyOf": [one_of("checkpoint_store"), {"type": "null"}]}
    transform_ref = defs.get("TransformSection", {})
    if "properties" in transform_ref:
        transform_ref["properties"]["steps"] = {"type": "array", "items": one_of("transform")}
    format_defs: dict[str, Any] = {}
    _type_formats(defs, _format_schema(registry, format_defs))  # in the component blocks of defs
    defs.update(format_defs)
    props["metrics"] = _metrics_schema(registry, defs, props.get("metrics", {}))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Sluice job"
    return schema
