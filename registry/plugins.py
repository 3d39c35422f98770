"""Finds plugins through the ``rlx`` entry-point group and turns names into components.

Built-ins and third-party plugins take the same path. A plugin whose import or
registration raises is recorded with its error and skipped; the others keep working.
``RLX_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Iterable

import pluggy
from pydantic import BaseModel

from rlx import hookspecs
from rlx.errors import PluginError, UsageError

KINDS = ("objective", "reward", "environment", "policy")
_HOOK_FOR_KIND = {
    "objective": "rlx_register_objectives",
    "reward": "rlx_register_rewards",
    "environment": "rlx_register_environments",
    "policy": "rlx_register_policies",
}


class EmptyConfig(BaseModel):
    """A component without settings."""


@dataclass
class ComponentSpec:
    """One registered component. ``meta`` carries what the core validates before any
    heavy import: an objective's ``accepts`` and ``data``, an environment's ``kind`` and
    ``default_reward``, a reward's ``granularity``, a policy's ``kind``."""

    kind: str
    name: str
    factory: str | Callable[..., Any]
    config: type[BaseModel]
    plugin: str
    version: str
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        if callable(self.factory):
            return self.factory
        module, _, attr = self.factory.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # the plugin's own code is broken
            raise PluginError(
                f"plugin '{self.plugin}' cannot load {self.kind} '{self.name}' from "
                f"'{self.factory}': {type(exc).__name__}: {exc}; reinstall or disable it "
                f"with RLX_DISABLE_PLUGINS={self.plugin}"
            ) from exc
        return obj

    def build(self, config: BaseModel, **kwargs: Any) -> Any:
        return self.load()(config, **kwargs)


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    status: str = "ok"  # ok | disabled | error
    error: str = ""
    hooks: list[str] = field(default_factory=list)
    components: list[ComponentSpec] = field(default_factory=list)
    dist_path: str = ""  # the distribution's .dist-info folder, where known (rlx.registry.cache)


def disabled_plugins() -> set[str]:
    raw = os.environ.get("RLX_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


class Registry:
    """All loaded plugins and the components they registered."""

    def __init__(self, eps: Iterable[EntryPoint] | None = None, disabled: set[str] | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, ComponentSpec]] = {k: {} for k in KINDS}
        blocked = disabled_plugins() if disabled is None else disabled
        # each distribution's METADATA parsed once (``dist.name`` and ``dist.version``
        # parse it on every access: a third of listing the plugins)
        self._dists: dict[int, tuple[str, str]] = {}

        # built-ins first, so a third-party name clash is reported on the newcomer
        def order(ep: EntryPoint) -> tuple[bool, str]:
            return (self._dist(ep)[0] != "rlx", ep.name)

        for ep in sorted(eps if eps is not None else entry_points(group="rlx"), key=order):
            self._load(ep, blocked)
        for kind in KINDS:
            self._collect(kind)

    def _dist(self, ep: EntryPoint) -> tuple[str, str]:
        """(distribution name, version) of an entry point; ("?", "?") without one."""
        dist = getattr(ep, "dist", None)
        if dist is None:
            return "?", "?"
        known = self._dists.get(id(dist))
        if known is None:
            meta = dist.metadata
            known = self._dists[id(dist)] = (meta["Name"], meta["Version"])
        return known

    def _load(self, ep: EntryPoint, blocked: set[str]) -> None:
        distribution, version = self._dist(ep)
        info = PluginInfo(name=ep.name, module=ep.value, distribution=distribution, version=version,
                          dist_path=str(getattr(getattr(ep, "dist", None), "_path", "") or ""))
        if ep.name in self.plugins:
            info.status, info.error = "error", f"entry point name '{ep.name}' is used twice"
            self.plugins[f"{ep.name}({info.distribution})"] = info
            return
        self.plugins[ep.name] = info
        if ep.name in blocked:
            info.status = "disabled"
            return
        try:
            plugin = ep.load()
            self.pm.register(plugin, name=ep.name)
        except Exception as exc:
            info.status, info.error = "error", f"{type(exc).__name__}: {exc}"
            return
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    def _collect(self, kind: str) -> None:
        caller = getattr(self.pm.hook, _HOOK_FOR_KIND[kind])
        for impl in caller.get_hookimpls():
            info = self.plugins[impl.plugin_name]
            if info.status != "ok":
                continue
            added: list[ComponentSpec] = []

            def register(name: str, factory: str | Callable[..., Any], config: type[BaseModel] | None = None,
                         description: str = "", **meta: Any) -> None:
                if name in self.components[kind] or any(s.name == name for s in added):
                    owner = self.components[kind].get(name)
                    raise PluginError(f"{kind} '{name}' is already registered"
                                      + (f" by plugin '{owner.plugin}'" if owner else ""))
                if config is not None and not (isinstance(config, type) and issubclass(config, BaseModel)):
                    raise PluginError(f"{kind} '{name}': config must be a pydantic BaseModel subclass")
                added.append(ComponentSpec(kind, name, factory, config or EmptyConfig, info.name,
                                           info.version, description, meta))

            try:
                impl.function(register)
            except Exception as exc:
                info.status, info.error = "error", f"{type(exc).__name__}: {exc}"
                for specs in self.components.values():
                    for n in [n for n, s in specs.items() if s.plugin == info.name]:
                        del specs[n]
                info.components = []
                continue
            for spec in added:
                self.components[kind][spec.name] = spec
            info.components.extend(added)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> ComponentSpec:
        specs = self.components[kind]
        if name in specs:
            return specs[name]
        for info in self.plugins.values():
            if info.name == name and info.status != "ok":
                why = "is disabled by RLX_DISABLE_PLUGINS" if info.status == "disabled" else f"failed to load ({info.error})"
                raise UsageError(f"{kind} '{name}' is unavailable: plugin '{name}' {why}")
        flag = "--" + ("env" if kind == "environment" else kind)
        close = difflib.get_close_matches(name, list(specs), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        available = ", ".join(sorted(specs)) or "none installed"
        # a disabled or broken plugin may be the one that would have registered this name
        off = [i.name for i in self.plugins.values() if i.status == "disabled"]
        broken = [i.name for i in self.plugins.values() if i.status == "error"]
        extra = (f"; disabled plugins: {', '.join(off)}" if off else "") + (
            f"; plugins that failed to load: {', '.join(broken)}" if broken else "")
        raise UsageError(f"unknown {kind} '{name}' for {flag}; {hint}available: {available}{extra}")

    def add_commands(self, app: Any) -> None:
        for impl in self.pm.hook.rlx_register_commands.get_hookimpls():
            info = self.plugins[impl.plugin_name]
            try:
                impl.function(app)
            except Exception as exc:
                info.status, info.error = "error", f"{type(exc).__name__}: {exc}"

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def rows(self) -> list[dict[str, Any]]:
        """One row per component, plus one per plugin that registered none (broken,
        disabled, or commands only): what ``rlx plugins list`` shows."""
        rows: list[dict[str, Any]] = []
        for info in sorted(self.plugins.values(), key=lambda i: i.name):
            status = info.status if info.status != "error" else f"error: {info.error}"
            for spec in info.components:
                rows.append({"name": spec.name, "kind": spec.kind, "family": info.name,
                             "version": info.version, "distribution": info.distribution,
                             "status": status, "description": spec.description})
            if not info.components:
                kinds = "command" if "rlx_register_commands" in info.hooks else "-"
                rows.append({"name": info.name, "kind": kinds, "family": info.name,
                             "version": info.version, "distribution": info.distribution,
                             "status": status, "description": ""})
        return rows


_registry: Registry | None = None


def get_registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded once."""
    global _registry
    if _registry is None or refresh:
        _registry = Registry()
    return _registry
