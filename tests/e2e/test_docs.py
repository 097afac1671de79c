"""Documented by construction: every option of every installed component, and every hook, is in
the README, and every option carries a description (which feeds `sluice schema`)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel

from sluice import hookspecs
from sluice.registry import Registry

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
REGISTRY = Registry.from_entry_points()


def models() -> list[tuple[str, type[BaseModel]]]:
    """Each component's config model, and the nested models its fields use."""
    seen: dict[type[BaseModel], str] = {}

    def visit(model: type[BaseModel], label: str) -> None:
        if model in seen:
            return
        seen[model] = label
        for field in model.model_fields.values():
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if inspect.isclass(arg) and issubclass(arg, BaseModel):
                    visit(arg, f"{label}.{arg.__name__}")

    for kind, types in REGISTRY.types.items():
        for name, klass in sorted(types.items()):
            if getattr(klass, "__module__", "").startswith("sluice_example"):
                continue  # the example third-party plugin documents itself
            visit(klass.Config, f"{kind} {name}")
    return [(label, model) for model, label in seen.items()]


@pytest.mark.parametrize(("label", "model"), models(), ids=[label for label, _ in models()])
def test_every_option_is_in_the_readme_and_described(label: str, model: type[BaseModel]) -> None:
    for attr, field in model.model_fields.items():
        name = field.alias or attr  # what users write in the job file
        # in an option table (`name`) or in a documented YAML example (name: ...)
        assert f"`{name}`" in README or f" {name}:" in README or f"{{{name}:" in README, \
            f"{label}: option {name!r} is not documented in README.md"
        assert field.description or model.__module__.startswith("sluice."), \
            f"{label}: option {name!r} has no description"


def test_every_hook_is_in_the_readme() -> None:
    for name, _ in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("sluice_"):
            assert f"`{name}" in README, f"hook {name} is not documented in README.md"


def test_the_plugin_example_in_the_readme_is_the_shipped_package() -> None:
    code = (Path(__file__).resolve().parents[2] / "examples/plugin/src/sluice_example/plugin.py").read_text()
    body = code.split('"""', 2)[2].replace("from __future__ import annotations\n\n", "").strip()
    assert body in README, "README's plugin example differs from examples/plugin"
