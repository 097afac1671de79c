"""JSON Schema of a job file, built from the installed plugins' config models (for editors)."""

from __future__ import annotations

from typing import Any

from .config import JobConfig
from .registry import Kind, Registry


def _variants(registry: Registry, kind: Kind, defs: dict[str, Any]) -> list[dict[str, Any]]:
    variants = []
    seen: set[type] = set()
    for name in sorted(registry.types[kind]):
        klass = registry.types[kind][name]
        if klass in seen:
            continue
        seen.add(klass)
        prefix = f"{kind}.{klass.type}"
        schema = klass.Config.model_json_schema(ref_template=f"#/$defs/{prefix}.{{model}}")
        for sub_name, sub in schema.pop("$defs", {}).items():
            defs[f"{prefix}.{sub_name}"] = sub  # prefixed: two plugins may both name a model "Auth"
        names = [klass.type, *getattr(klass, "aliases", ())]
        schema["properties"] = {"type": {"enum": names, "description": f"{kind} type"}, **schema.get("properties", {})}
        schema["required"] = ["type", *schema.get("required", [])]
        schema["additionalProperties"] = False
        schema.setdefault("title", klass.__name__)
        defs[prefix] = schema
        variants.append({"$ref": f"#/$defs/{prefix}"})
    return variants


def job_schema(registry: Registry) -> dict[str, Any]:
    """The job file's schema with every component block typed by its plugin's ``Config``."""
    schema = JobConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    props = schema["properties"]

    def one_of(kind: Kind) -> dict[str, Any]:
        return {"oneOf": _variants(registry, kind, defs)}

    props["source"] = one_of("source")
    props["destination"] = one_of("sink")
    props["dead_letter"] = {"anyOf": [props["destination"], {"type": "null"}]}
    props["checkpoints"] = {"anyOf": [one_of("checkpoint_store"), {"type": "null"}]}
    transform_ref = defs.get("TransformSection", {})
    if "properties" in transform_ref:
        transform_ref["properties"]["steps"] = {"type": "array", "items": one_of("transform")}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Sluice job"
    return schema
