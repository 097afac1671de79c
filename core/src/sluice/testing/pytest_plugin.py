"""pytest fixtures for testing Sluice plugins (loaded automatically through ``pytest11``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..registry import Registry, get_registry, set_registry


@pytest.fixture
def sluice_registry() -> Iterator[Callable[..., Registry]]:
    """Build a fresh registry from plugin objects (modules or instances with hookimpls), without
    entry points, and make it the process-wide one for the test. Core's built-ins are included
    unless ``builtins=False``.

        def test_my_transform(sluice_registry):
            registry = sluice_registry(my_plugin_module)
    """
    previous = get_registry()

    def make(*plugins: Any, builtins: bool = True) -> Registry:
        registry = Registry.from_plugins(*plugins, builtins=builtins)
        set_registry(registry)
        return registry

    yield make
    set_registry(previous)
