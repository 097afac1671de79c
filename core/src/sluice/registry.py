"""Discovers plugins through the ``sluice.plugins`` entry points and maps type names to classes.

Each entry point is loaded on its own: a broken plugin is recorded and reported (``sluice
plugins``, unknown-type errors) but never hides the others. Two plugins claiming one type name
fail at once, naming both. The same holds for every kind a plugin contributes: components,
file formats (``sluice_formats``) and metrics exporters (``sluice_metrics_exporters``).
"""

from __future__ import annotations

import difflib
import os
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy
from pydantic import BaseModel, ValidationError

from . import hookspecs
from .components import Component
from .errors import PluginError, UnknownTypeError, format_validation_error

ENTRY_POINT_GROUP = "sluice.plugins"
DISABLE_ENV = "SLUICE_DISABLE_PLUGINS"

Kind = Literal["source", "sink", "transform", "checkpoint_store", "format", "metrics_exporter"]
KINDS: dict[Kind, str] = {
    "source": "sluice_sources",
    "sink": "sluice_sinks",
    "transform": "sluice_transforms",
    "checkpoint_store": "sluice_checkpoint_stores",
    "format": "sluice_formats",
    "metrics_exporter": "sluice_metrics_exporters",
}
HOOKS = sorted(name for name, spec in vars(hookspecs).items() if hasattr(spec, f"{hookspecs.PROJECT}_spec"))
IMPL_MARK = f"{hookspecs.PROJECT}_impl"  # the attribute @hookimpl sets on a function


@dataclass
class PluginInfo:
    """One loaded plugin: its entry-point name, distribution, version and the types it gives."""

    name: str
    distribution: str = ""
    version: str = ""
    types: dict[str, list[str]] = field(default_factory=dict)
    aliases: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # kind → type → its aliases


@dataclass
class PluginFailure:
    """A plugin that failed to load, and why (shown by ``sluice plugins`` and unknown-type errors)."""

    name: str
    distribution: str
    error: str


class Failures(list[PluginFailure]):
    """Plugin failures, each listed once: a lookup that calls a hook again after the registry
    recorded its failure (``sluice.formats.format_types``) must not list it twice."""

    def append(self, failure: PluginFailure) -> None:
        if failure not in self:
            super().append(failure)


def label(kind: Kind) -> str:
    """A kind in messages: ``sink type``, ``format``, ``metrics exporter``."""
    return {"format": "format", "metrics_exporter": "metrics exporter"}.get(kind, f"{kind.replace('_', ' ')} type")


def disabled_plugins() -> set[str]:
    """Names in ``SLUICE_DISABLE_PLUGINS`` (comma separated): entry-point or distribution names."""
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class Registry:
    """Type names of every kind mapped to classes (components, formats, metrics exporters), plus
    what failed to load."""

    def __init__(self, pm: pluggy.PluginManager, failures: Iterable[PluginFailure] = (),
                 infos: dict[str, PluginInfo] | None = None) -> None:
        self.pm = pm
        self.failures = Failures(failures)
        self.plugins: dict[str, PluginInfo] = infos or {}
        self.types: dict[Kind, dict[str, type[Any]]] = {k: {} for k in KINDS}
        self._collect()

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def _manager() -> pluggy.PluginManager:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        return pm

    @classmethod
    def from_entry_points(cls, disabled: set[str] | None = None) -> Registry:
        """Load every installed plugin; a failing one is recorded, not raised."""
        disabled = disabled_plugins() if disabled is None else disabled
        pm = cls._manager()
        failures: list[PluginFailure] = []
        infos: dict[str, PluginInfo] = {}
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else ""
            if ep.name in disabled or dist in disabled:
                continue  # blocked before import: a disabled plugin's code never runs
            if pm.has_plugin(ep.name):
                failures.append(PluginFailure(ep.name, dist, "another plugin has the same entry-point name"))
                continue
            try:
                module = ep.load()
                _register(pm, module, ep.name)
            except PluginError as exc:
                failures.append(PluginFailure(ep.name, dist, str(exc)))
                continue
            except Exception as exc:
                failures.append(PluginFailure(ep.name, dist, f"{type(exc).__name__}: {exc}"))
                continue
            infos[ep.name] = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else "")
        return cls(pm, failures, infos)

    @classmethod
    def from_plugins(cls, *plugins: Any, builtins: bool = True) -> Registry:
        """A registry of the given plugin objects only (no entry points): for tests.

        A plugin that fails the hook check is recorded as a failure, as from entry points."""
        pm = cls._manager()
        infos: dict[str, PluginInfo] = {}
        failures: list[PluginFailure] = []
        if builtins:
            from .builtin import plugin as builtin_plugin

            plugins = (builtin_plugin, *plugins)
        for i, plugin in enumerate(plugins):
            name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
            try:
                _register(pm, plugin, name)
            except PluginError as exc:
                failures.append(PluginFailure(name, "", str(exc)))
                continue
            infos[name] = PluginInfo(name)
        return cls(pm, failures, infos)

    def _collect(self) -> None:
        owners: dict[tuple[Kind, str], str] = {}
        for kind, hook_name in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin = impl.plugin_name
                try:
                    classes = impl.function() or []
                except Exception as exc:
                    dist = self.plugins.get(plugin, PluginInfo(plugin)).distribution
                    error = f"{hook_name}() raised {type(exc).__name__}: {exc}"
                    self.failures.append(PluginFailure(plugin, dist, error))
                    continue
                for klass in classes:
                    for name in (klass.type, *getattr(klass, "aliases", ())):
                        other = owners.get((kind, name))
                        if other is not None and self.types[kind][name] is not klass:
                            raise PluginError(
                                f"{label(kind)} {name!r} is provided by two plugins: {other!r} and {plugin!r}; "
                                f"uninstall one or block it with {DISABLE_ENV}={plugin}"
                            )
                        owners[(kind, name)] = plugin
                        self.types[kind][name] = klass
                    info = self.plugins.setdefault(plugin, PluginInfo(plugin))
                    info.types.setdefault(kind, []).append(klass.type)
                    if getattr(klass, "aliases", ()):
                        info.aliases.setdefault(kind, {})[klass.type] = list(klass.aliases)

    # -- lookup -------------------------------------------------------------------------------
    def get(self, kind: Kind, name: str, where: str = "") -> type[Component]:
        """The class for ``name``; an unknown name raises with the known ones and a close match."""
        try:
            return self.types[kind][name]
        except KeyError:
            pass
        known = sorted(self.types[kind])
        what = label(kind)
        msg = f"{where}: unknown {what} {name!r}." if where else f"unknown {what} {name!r}."
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            msg += f" Did you mean {close[0]!r}?"
        msg += f" Known {what}s: {', '.join(known) or '(none)'}."
        if self.failures:
            msg += " Plugins that failed to load: " + "; ".join(f"{f.name} ({f.error})" for f in self.failures) + "."
        else:
            msg += " If it comes from a plugin, install it (pip install ...) and check `sluice plugins`."
        raise UnknownTypeError(msg)

    def validate(self, kind: Kind, block: dict[str, Any], where: str) -> tuple[type[Component], BaseModel]:
        """Resolve ``block['type']`` and validate the rest of the block with the class's Config."""
        klass = self.get(kind, str(block.get("type")), where)
        body = {k: v for k, v in block.items() if k != "type"}
        try:
            config = klass.Config.model_validate(body)
        except ValidationError as exc:
            raise format_validation_error(exc, f"{where} (type: {block.get('type')})", klass.Config) from None
        return klass, config

    def hook(self) -> Any:
        """The pluggy hook relay, for calling hooks such as ``sluice_resolve_secret``."""
        return self.pm.hook


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Register ``plugin`` and check its hooks against the specs (what pluggy's ``check_pending()``
    does, for this plugin alone): a misspelled hook would otherwise never be called, silently.
    Raises PluginError, with the plugin unregistered, so the other plugins still load."""
    pm.register(plugin, name=name)
    problems = []
    for caller in pm.get_hookcallers(plugin) or []:
        impls = [i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook]
        if not caller.has_spec() and impls:
            close = difflib.get_close_matches(caller.name, HOOKS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"Sluice hooks: {', '.join(HOOKS)}"
            problems.append(f"hook {caller.name!r} is not a Sluice hook; {hint}")
    if isinstance(plugin, types.ModuleType):
        for hook in HOOKS:
            function = vars(plugin).get(hook)
            if callable(function) and getattr(function, "__module__", None) == plugin.__name__ \
                    and not hasattr(function, IMPL_MARK):
                problems.append(f"{hook}() is not marked @hookimpl, so Sluice never calls it")
    if problems:
        pm.unregister(plugin)
        raise PluginError("; ".join(problems))


_default: Registry | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Registry.from_entry_points()
        return _default


def set_registry(registry: Registry | None) -> None:
    """Replace (or with None, forget) the process-wide registry; used by tests and embedders."""
    global _default
    with _lock:
        _default = registry
