"""Plugin discovery (entry points + pluggy) and the catalog of plugins and runs.

The names below load on first use: ``rlx.registry.cache`` and ``rlx.registry.catalog_read``
serve ``rlx --help``, ``rlx plugins list`` and ``rlx runs list`` without importing
pluggy's entry-point machinery, pydantic or SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ComponentSpec", "PluginInfo", "Registry", "get_registry"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rlx.registry import plugins

        value = getattr(plugins, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlx.registry' has no attribute {name!r}")
