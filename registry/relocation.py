"""An RLX_HOME that was moved or copied keeps working.

The catalog and MLflow's SQLite store hold absolute paths into the home: each run's store
URI, checkpoint and policy folder, and MLflow's artifact locations. After ``mv ~/.rlx
/data/rlx`` those point at a folder that is gone: a resume cannot find its MLflow run,
and logging an artifact would create the old folder again. The home therefore notes where
it lives (``RLX_HOME/.home``); opened from elsewhere, rlx rewrites the paths that begin
with the old location, in both stores, once, and says so.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MARKER = ".home"
# (table, column) of MLflow's schema that hold artifact paths under the home's mlartifacts/
_MLFLOW_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                   ("logged_models", "artifact_location"))
_CATALOG_COLUMNS = ("tracking_uri", "checkpoint", "policy_dir")


def follow(home: Path) -> str | None:
    """Rewrite the paths of a home found at ``home`` that was made elsewhere; a line saying
    what was done, or None when the home was not moved."""
    marker = home / MARKER
    here = str(home)
    try:
        old = marker.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        old = ""
    if old == here:
        return None
    if old:
        n = _rewrite(home, old, here)
    try:
        marker.write_text(here + "\n", encoding="utf-8")
    except OSError:
        return None  # a read-only home: nothing could be rewritten either
    if not old or not n:
        return None
    return f"RLX_HOME moved from {old} to {here}: updated {n} stored paths"


def _prefixes(old: str, new: str) -> list[tuple[str, str]]:
    """The forms a path takes in the stores: plain, in a sqlite:/// URI and as a file: URI."""
    from rlx.home import sqlite_uri

    pairs = [(old, new), (Path(old).as_uri(), Path(new).as_uri())]
    return pairs + [(sqlite_uri(Path(old)), sqlite_uri(Path(new)))]


def _rewrite(home: Path, old: str, new: str) -> int:
    changed = 0
    pairs = _prefixes(old, new)
    catalog = home / "catalog.db"
    if catalog.is_file():
        changed += _replace(catalog, [("runs", c) for c in _CATALOG_COLUMNS], pairs)
    store = home / "mlflow.db"
    if store.is_file():
        changed += _replace(store, _MLFLOW_COLUMNS, pairs)
        changed += _replace(store, [("tags", "value")], pairs, where="key = 'rlx.checkpoint'")
    return changed


def _replace(db: Path, columns: list[tuple[str, str]] | tuple[tuple[str, str], ...],
             pairs: list[tuple[str, str]], where: str = "") -> int:
    """``old`` prefixes replaced by ``new`` in each (table, column) that exists."""
    changed = 0
    con = sqlite3.connect(db, timeout=30)
    try:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        for table, column in columns:
            if table not in tables or column not in {r[1] for r in con.execute(f'pragma table_info("{table}")')}:
                continue
            for old, new in pairs:
                # old + '/' or exactly old: /home/a must not rewrite /home/ab
                cond = f'("{column}" = ? or substr("{column}", 1, ?) = ?)' + (f" and {where}" if where else "")
                cur = con.execute(f'update "{table}" set "{column}" = ? || substr("{column}", ?) where {cond}',
                                  (new, len(old) + 1, old, len(old) + 1, old + "/"))
                changed += cur.rowcount
        con.commit()
    finally:
        con.close()
    return changed
