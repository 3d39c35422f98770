"""Finds plugins through the ``rlx`` entry-point group and turns names into components.

Built-ins and third-party plugins take the same path. A plugin whose import or
registration raises, or whose import does not finish within ``RLX_PLUGIN_TIMEOUT``
seconds (default 30), is recorded with its error and skipped; the others keep working.
``RLX_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name.
"""

from __future__ import annotations

import difflib
import importlib
import os
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Iterable

import pluggy
from pydantic import BaseModel

from rlx import hookspecs
from rlx.errors import PluginError, UsageError

KINDS = ("objective", "reward", "environment", "policy", "kind", "launcher")
_HOOK_FOR_KIND = {
    "objective": "rlx_register_objectives",
    "reward": "rlx_register_rewards",
    "environment": "rlx_register_environments",
    "policy": "rlx_register_policies",
    "kind": "rlx_register_kinds",
    "launcher": "rlx_register_launchers",
}
# what a built component must be an instance of: the loop calls these interfaces' methods
_INTERFACE_FOR_KIND = {
    "objective": ("rlx.objective", "Objective"),
    "reward": ("rlx.reward", "RewardSource"),
    "environment": ("rlx.environment", "Environment"),
    "policy": ("rlx.policy", "Policy"),
    "kind": ("rlx.kind", "EnvironmentKind"),
    "launcher": ("rlx.launcher", "Launcher"),
}
# Registration fields per component kind, with their defaults: what core validates and
# reads before anything heavy is imported. Stated here once; documented in rlx.hookspecs.
REGISTRATION_FIELDS: dict[str, dict[str, Any]] = {
    "objective": {"accepts": ("text",), "data": "rollouts", "produces": "policy", "headline": (),
                  "defaults": {}, "kind_defaults": {}, "default": False, "requires": ()},
    "reward": {"granularity": "outcome", "kinds": (), "requires": ()},
    "environment": {"kind": "text", "default_reward": None, "task_field": None, "requires": ()},
    "policy": {"interface": "lm", "requires": ()},
    "kind": {"interface": "lm", "data": ("rollouts",), "default_policy": None, "default_env": None,
             "default_objective": None, "headline": (), "requires": ()},
    "launcher": {"default": False, "requires": ()},
}
_CHOICES = {("objective", "produces"): ("policy", "reward_model", "nothing"),
            ("reward", "granularity"): ("outcome", "process")}
_TUPLES = {"accepts", "headline", "requires", "data", "kinds"}
# long enough for a plugin module that imports torch at the top from a cold disk; a
# module that takes longer is stuck (waiting on a lock, a network mount, a sleep)
IMPORT_TIMEOUT_S = 30.0
# modules whose import was abandoned: their import lock is still held by the stuck
# thread, so importing them again in this process would block for good
_stuck: dict[str, float] = {}


class EmptyConfig(BaseModel):
    """A component without settings."""


@dataclass
class ComponentSpec:
    """One registered component. ``meta`` carries what the core validates before any
    heavy import: an objective's ``accepts`` and ``data``, an environment's ``kind`` and
    ``default_reward``, a reward's ``granularity``, a policy's ``interface`` (see REGISTRATION_FIELDS)."""

    kind: str
    name: str
    factory: str | Callable[..., Any]
    config: type[BaseModel]
    plugin: str
    version: str
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    unavailable: str = ""  # why it cannot be used although registered (a required plugin is off)

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
        """The component, checked against its kind's interface: a factory that returns
        something else would otherwise fail far away, in the middle of a run."""
        built = self.load()(config, **kwargs)
        module, name = _INTERFACE_FOR_KIND[self.kind]
        interface = getattr(importlib.import_module(module), name)
        if not isinstance(built, interface):
            got = repr(built)
            got = got if len(got) <= 60 else got[:57] + "..."
            factory = self.factory if isinstance(self.factory, str) else getattr(
                self.factory, "__qualname__", repr(self.factory))
            raise PluginError(
                f"plugin '{self.plugin}': {self.kind} '{self.name}' (factory {factory}) returned "
                f"{type(built).__name__} {got}, not a {module}.{name}; fix the plugin or disable it with "
                f"RLX_DISABLE_PLUGINS={self.plugin}")
        return built


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


def registration_meta(kind: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` registration fields checked against ``kind``'s and completed with their
    defaults, so that core reads ``meta[field]`` and a typo fails at registration."""
    allowed = REGISTRATION_FIELDS[kind]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise PluginError(f"{kind} '{name}': unknown registration field '{unknown[0]}'; "
                          f"allowed: {', '.join(allowed) or 'none'}")
    meta = {**allowed, **given}
    for key in _TUPLES & set(meta):
        if key == "data" and kind == "objective":  # one mode for an objective, several for a kind
            continue
        value = meta[key]
        meta[key] = (value,) if isinstance(value, str) else tuple(value)
    for (k, f), choices in _CHOICES.items():
        if k == kind and meta[f] not in choices:
            raise PluginError(f"{kind} '{name}': {f}={meta[f]!r} is not one of {', '.join(choices)}")
    return meta


def disabled_plugins() -> set[str]:
    raw = os.environ.get("RLX_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def import_timeout() -> float:
    """Seconds a plugin's import may take: ``RLX_PLUGIN_TIMEOUT``, default ``IMPORT_TIMEOUT_S``."""
    from rlx.home import env_seconds

    return env_seconds("RLX_PLUGIN_TIMEOUT", IMPORT_TIMEOUT_S, positive=True)


def _module(ep: EntryPoint) -> str:
    return ep.value.split(":")[0].strip()


def load_entry_points(eps: list[EntryPoint], timeout: float) -> list[tuple[str, Any]]:
    """``ep.load()`` of each entry point, in order, as ``("ok", plugin)``, ``("error",
    exception)`` or ``("stuck", message)``. The imports run in a daemon thread: one that is
    still running after ``timeout`` seconds is abandoned with its thread (Python cannot
    stop it; it dies with the process) and the rest go on in a new thread. One thread for
    them all, not one each: a thread per plugin costs more than the imports themselves."""
    out: list[tuple[str, Any] | None] = [None] * len(eps)
    cond = threading.Condition()
    while True:
        for i, ep in enumerate(eps):  # a stuck module's lock is held: importing it again would block
            if out[i] is None and _module(ep) in _stuck:
                out[i] = ("stuck", _stuck_message(_stuck[_module(ep)]))
        todo = [i for i, o in enumerate(out) if o is None]
        if not todo:
            return out  # type: ignore[return-value]
        now: dict[str, Any] = {"i": None, "since": time.monotonic(), "done": False, "abandoned": False}

        def work(todo: list[int] = todo, now: dict[str, Any] = now) -> None:
            for i in todo:
                with cond:
                    if now["abandoned"]:
                        return
                    now["i"], now["since"] = i, time.monotonic()
                try:
                    got: tuple[str, Any] = ("ok", eps[i].load())
                except BaseException as exc:  # handed to the caller, who decides what is fatal
                    got = ("error", exc)
                with cond:
                    if now["abandoned"]:  # finished after all, too late: reported as stuck
                        return
                    out[i] = got
            with cond:
                now["done"] = True
                cond.notify_all()

        threading.Thread(target=work, name="rlx-plugin-imports", daemon=True).start()
        with cond:
            while not now["done"]:
                left = now["since"] + timeout - time.monotonic()
                if left <= 0 and now["i"] is not None:
                    now["abandoned"] = True
                    _stuck[_module(eps[now["i"]])] = timeout
                    out[now["i"]] = ("stuck", _stuck_message(timeout))
                    break
                cond.wait(max(left, 0.01))


def _stuck_message(timeout: float) -> str:
    return f"import did not finish within {timeout:g} s (RLX_PLUGIN_TIMEOUT)"


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

        timeout = import_timeout()
        admitted = [ep for ep in sorted(eps if eps is not None else entry_points(group="rlx"), key=order)
                    if self._admit(ep, blocked)]
        for ep, outcome in zip(admitted, load_entry_points(admitted, timeout)):
            self._load(ep, outcome)
        for kind in KINDS:
            self._collect(kind)
        self._check_requires()

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

    def _admit(self, ep: EntryPoint, blocked: set[str]) -> bool:
        """Record the plugin; True if it is to be imported (not disabled, not a duplicate)."""
        distribution, version = self._dist(ep)
        info = PluginInfo(name=ep.name, module=ep.value, distribution=distribution, version=version,
                          dist_path=str(getattr(getattr(ep, "dist", None), "_path", "") or ""))
        if ep.name in self.plugins:
            info.status, info.error = "error", f"entry point name '{ep.name}' is used twice"
            self.plugins[f"{ep.name}({info.distribution})"] = info
            return False
        self.plugins[ep.name] = info
        if ep.name in blocked:
            info.status = "disabled"
            return False
        return True

    def _load(self, ep: EntryPoint, outcome: tuple[str, Any]) -> None:
        """Register an imported plugin's hooks, or record why it has none."""
        info = self.plugins[ep.name]
        kind, value = outcome
        if kind == "stuck":
            info.status, info.error = "error", value
            return
        if kind == "error":
            if not isinstance(value, Exception):  # SystemExit, KeyboardInterrupt: not the plugin's to swallow
                raise value
            info.status, info.error = "error", f"{type(value).__name__}: {value}"
            return
        try:
            self.pm.register(value, name=ep.name)
        except Exception as exc:
            info.status, info.error = "error", f"{type(exc).__name__}: {exc}"
            return
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(value) or [])

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
                if config is not None and kind == "kind":  # a run has no section for it: it would never be read
                    raise PluginError(f"kind '{name}': environment kinds take no config; give settings to the "
                                      "environment or the objective")
                added.append(ComponentSpec(kind, name, factory, config or EmptyConfig, info.name,
                                           info.version, description, registration_meta(kind, name, meta)))

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

    def _check_requires(self) -> None:
        """A component whose registration ``requires`` a plugin that is not loaded stays
        listed but cannot be used: disabling a plugin cuts what depends on it."""
        for specs in self.components.values():
            for spec in specs.values():
                missing = [p for p in spec.meta["requires"] if self.plugins.get(p) is None
                           or self.plugins[p].status != "ok"]
                if missing:
                    p = missing[0]
                    why = ("is not installed" if p not in self.plugins else "is disabled by RLX_DISABLE_PLUGINS"
                           if self.plugins[p].status == "disabled" else "failed to load")
                    spec.unavailable = f"it needs plugin '{p}', which {why}"

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> ComponentSpec:
        specs = self.components[kind]
        if name in specs:
            if specs[name].unavailable:
                raise UsageError(f"{kind} '{name}' is unavailable: {specs[name].unavailable}")
            return specs[name]
        for info in self.plugins.values():
            if info.name == name and info.status != "ok":
                why = "is disabled by RLX_DISABLE_PLUGINS" if info.status == "disabled" else f"failed to load ({info.error})"
                raise UsageError(f"{kind} '{name}' is unavailable: plugin '{name}' {why}")
        flag = {"environment": "--env", "kind": "an environment's kind="}.get(kind, "--" + kind)
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

    def stop_requests(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Call every ``rlx_step_end`` hook; the names of the plugins that asked to stop.
        Each is called by itself (not through pluggy's call), so the loop can record who stopped the run."""
        given = {"step": step, "metrics": metrics}
        # as pluggy calls it: an implementation takes any subset of the arguments
        return [impl.plugin_name for impl in self.pm.hook.rlx_step_end.get_hookimpls()
                if impl.function(**{k: given[k] for k in impl.argnames})]

    def rows(self) -> list[dict[str, Any]]:
        """One row per component, plus one per plugin that registered none (broken,
        disabled, or commands only): what ``rlx plugins list`` shows."""
        rows: list[dict[str, Any]] = []
        for info in sorted(self.plugins.values(), key=lambda i: i.name):
            status = info.status if info.status != "error" else f"error: {info.error}"
            for spec in info.components:
                rows.append({"name": spec.name, "kind": spec.kind, "family": info.name,
                             "version": info.version, "distribution": info.distribution,
                             "status": f"unavailable: {spec.unavailable}" if spec.unavailable and status == "ok"
                             else status, "description": spec.description})
            if not info.components:
                lifecycle = {"rlx_run_start", "rlx_step_end", "rlx_run_end"} & set(info.hooks)
                kinds = ("command" if "rlx_register_commands" in info.hooks else "hooks" if lifecycle else "-")
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
