"""Plugin discovery (entry points + pluggy) and the catalog of plugins and runs."""

from rlx.registry.plugins import ComponentSpec, PluginInfo, Registry, get_registry

__all__ = ["ComponentSpec", "PluginInfo", "Registry", "get_registry"]
