"""What ``rlx plugins list`` shows and which plugins add CLI commands, cached on disk so
that ``rlx --help``, ``rlx plugins list`` and ``rlx runs list`` need not import every
plugin (and pydantic with them) on each call.

The cache (``RLX_HOME/cache/plugins-*.json``, one file per interpreter, ``sys.path`` and
``RLX_DISABLE_PLUGINS``) holds the output of a full :class:`~rlx.registry.Registry` load
and is used only while nothing that load depended on has changed: the modification time
and size of every ``sys.path`` directory (installing or removing a distribution changes
its folder), of each plugin distribution's ``METADATA`` and ``entry_points.txt``, and of
every module file of rlx and of each plugin's top-level package. A load in which any
plugin failed is not cached, so a broken plugin is retried (and reported) every time; one
whose import hangs costs ``RLX_PLUGIN_TIMEOUT`` on each full load (rlx.registry.plugins),
and so the built-in commands do not ask for the summary just to find plugin commands
(rlx.cli.main).
``RLX_PLUGIN_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

FORMAT = 1
_MAX_FILES = 8  # cache files kept per RLX_HOME (one per environment)
_HOOK = "rlx_register_commands"
_RACY_NS = 2_000_000_000  # sources changed less than this before a load are not trusted


class Summary:
    """The listing of plugins and the names of the plugins that register commands."""

    def __init__(self, rows: list[dict[str, Any]], commands: list[str], cached: bool):
        self._rows = rows
        self.commands = commands
        self.cached = cached  # True: read from the cache, no plugin imported

    def rows(self) -> list[dict[str, Any]]:
        """``Registry.rows()``: the live registry's when it is loaded (plugin commands may
        have changed a status since), else the cached rows."""
        plugins = sys.modules.get("rlx.registry.plugins")  # not imported: no registry loaded
        live = getattr(plugins, "_registry", None)
        return live.rows() if live is not None else self._rows


_summary: tuple[list[str], Summary] | None = None


def summary() -> Summary:
    """The plugin summary for this environment: from the cache when it is valid, else
    from a full registry load (which is then cached)."""
    global _summary
    key = _key()
    if _summary is not None and _summary[0] == key:
        return _summary[1]
    path = _path(key)
    got = _read(path, key) if path is not None else None
    if got is None:
        got = _build(path, key)
    _summary = (key, got)
    return got


def _key() -> list[str]:
    disabled = ",".join(sorted({p.strip() for p in os.environ.get("RLX_DISABLE_PLUGINS", "").split(",") if p.strip()}))
    return [str(FORMAT), sys.executable, sys.version, disabled, *sys.path]


def _path(key: list[str]) -> str | None:
    if os.environ.get("RLX_PLUGIN_CACHE", "1") == "0":
        return None
    import zlib

    from rlx.home import home

    try:
        folder = home() / "cache"
    except (OSError, RuntimeError):  # no home directory to resolve
        return None
    return str(folder / f"plugins-{zlib.crc32(json.dumps(key).encode()):08x}.json")


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path or ".")
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size]


def _read(path: str, key: list[str]) -> Summary | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data["key"] != key:
            return None
        for file, stamp in data["stamps"]:
            if _stamp(file) != stamp:
                return None
        return Summary(data["rows"], data["commands"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build(path: str | None, key: list[str]) -> Summary:
    import time

    from rlx.registry import plugins

    fresh = plugins._registry is None  # loaded here, under this environment
    started = time.time_ns()
    reg = plugins.get_registry()
    infos = list(reg.plugins.values())
    out = Summary(reg.rows(), [i.name for i in infos if i.status == "ok" and _HOOK in i.hooks], cached=False)
    if path is not None and fresh and all(i.status != "error" for i in infos):
        try:
            _write(path, key, out, _sources(reg), started)
        except Exception:  # a cache that cannot be written is only slower
            pass
    return out


def _sources(reg: Any) -> list[str]:
    """The files whose change can change what the registry finds."""
    files = [p or "." for p in sys.path]
    for info in reg.plugins.values():
        dist = getattr(info, "dist_path", "")
        if dist:
            files += [os.path.join(dist, "METADATA"), os.path.join(dist, "entry_points.txt")]
    tops = {"rlx"} | {i.module.split(":")[0].split(".")[0] for i in reg.plugins.values()}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in tops:
            file = getattr(module, "__file__", None)
            if file:
                files.append(file)
    return sorted(set(files))


def _write(path: str, key: list[str], out: Summary, sources: list[str], started: int) -> None:
    import tempfile

    stamps = [[f, _stamp(f)] for f in sources]
    # a file changed just before or during the load may have been read half-written, and
    # a change within the file system's timestamp granularity would go unseen: not cached
    if any(s is not None and s[0] > started - _RACY_NS for _, s in stamps):
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    data = {"key": key, "stamps": stamps, "rows": out._rows, "commands": out.commands}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plugins-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)  # atomic: concurrent rlx processes read whole files only
    except BaseException:
        os.unlink(tmp)
        raise
    old = sorted((e for e in os.scandir(folder) if e.name.startswith("plugins-")), key=lambda e: e.stat().st_mtime)
    for e in old[:-_MAX_FILES]:
        try:
            os.unlink(e.path)
        except OSError:
            pass
