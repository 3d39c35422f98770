"""Reading the runs table of a SQLite catalog with the standard library's ``sqlite3``.

``rlx runs list`` and ``rlx runs show`` only read, and importing SQLAlchemy and SQLModel
(what :class:`rlx.registry.catalog.Catalog` is built on) costs more than the rest of the
command. The table is the one ``catalog.RunRecord`` defines; rows read here have the
same attributes. Everything that writes (reaping dead runs, creating or migrating the
catalog) still goes through ``Catalog``: these functions return ``None`` whenever the
catalog is not a SQLite file that exists with a ``runs`` table, and the caller falls back.
A column an older catalog lacks reads as ``None``, as it would after ``Catalog`` added it.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
from datetime import datetime, timezone
from typing import Any

from rlx.errors import RlxError, UsageError

_DATES = ("created_at", "ended_at")
_RUN_ID = re.compile(r"[0-9a-f]{1,12}")  # run ids are 12 lowercase hex digits


def db_timeout() -> float:
    """Seconds SQLite waits for another process's write lock: ``RLX_DB_TIMEOUT``, default 30."""
    from rlx.home import env_seconds

    return env_seconds("RLX_DB_TIMEOUT", 30.0)


def run_prefix(prefix: str) -> str:
    """A run id or a prefix of one, lowercased; a UsageError for anything else (ids are
    hex: ``%`` or ``_`` must not reach a LIKE pattern, and a typo is told as such)."""
    norm = prefix.strip().lower()
    if not _RUN_ID.fullmatch(norm):
        raise UsageError(f"no run '{prefix}': run ids are 12 hex digits (0-9, a-f), or a prefix of one; "
                         "list runs with `rlx runs list`")
    return norm


def _started(pid: int) -> float:
    """When process ``pid`` started: tells a live run from a reused pid."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _alive(pid: int, started: float) -> bool:
    if pid <= 0:
        return False
    now = _started(pid)
    return now > 0 and (not started or abs(now - started) < 1.0)


class RunJson:
    """The JSON columns of a run, decoded: shared by ``RunRecord`` and ``RunRow``."""

    config_json: str
    metrics_json: str

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json or "{}")

    @property
    def metrics(self) -> dict[str, float]:
        return json.loads(self.metrics_json or "{}")


class RunRow(RunJson):
    """One row of the runs table, read-only, with ``RunRecord``'s attributes."""

    def __init__(self, values: dict[str, Any]):
        for k in _DATES:
            v = values.get(k)
            if isinstance(v, str):  # stored as UTC without an offset: read back in UTC, as SQLModel does
                d = datetime.fromisoformat(v)
                values[k] = d.replace(tzinfo=timezone.utc) if d.utcoffset() is None else d.astimezone(timezone.utc)
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # a column this (older) catalog does not have yet
        if name.startswith("_"):
            raise AttributeError(name)
        return None


def _query(url: str, sql: str, params: tuple[Any, ...]) -> list[RunRow] | None:
    from rlx.home import sqlite_path

    path = sqlite_path(url)
    if path is None or not path.is_file():
        return None
    wait = db_timeout()
    try:
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=wait)
    except sqlite3.Error:
        return None
    try:
        cur = con.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [RunRow(dict(zip(names, row))) for row in cur.fetchall()]
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise RlxError(f"the catalog '{url}' is locked by another process; retry when it is done, "
                           "or raise RLX_DB_TIMEOUT (seconds to wait, default 30)") from None
        return None  # no runs table yet, or not a catalog: let Catalog say what is wrong
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _reaped(url: str, rows: list[RunRow]) -> None:
    """Rows whose run's process is gone from this host are CRASHED: ``Catalog`` records that."""
    host = socket.gethostname()
    if any(r.status == "RUNNING" and r.host == host and not _alive(r.pid or 0, r.pid_started or 0.0) for r in rows):
        from rlx.registry.catalog import Catalog

        Catalog(url)._reap(rows)  # type: ignore[arg-type]


def list_runs(url: str, *, objective: str | None = None, reward: str | None = None, env: str | None = None,
              status: str | None = None, sweep: str | None = None, limit: int = 50) -> list[RunRow] | None:
    """``Catalog.list_runs``; ``None`` where ``Catalog`` must answer instead."""
    where, params = [], []
    if sweep:
        where.append("substr(sweep_id, 1, ?) = ?")
        params.extend([len(sweep), sweep])
    if objective:
        where.append("objective = ?")
        params.append(objective)
    if env:
        where.append("env = ?")
        params.append(env)
    sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created_at DESC"
    rows = _query(url, sql, tuple(params))
    if rows is None:
        return None
    _reaped(url, rows)
    if status:
        rows = [r for r in rows if r.status == status.upper()]
    if reward:
        rows = [r for r in rows if reward in (r.rewards or "").split(",")]
    return rows[:limit]


def get_run(url: str, prefix: str) -> RunRow | None:
    """``Catalog.get_run`` for an unambiguous prefix; ``None`` where ``Catalog`` must answer
    (including the errors for no match and an ambiguous prefix)."""
    prefix = run_prefix(prefix)
    # a plain comparison, not LIKE: the same rows as Catalog.get_run
    rows = _query(url, "SELECT * FROM runs WHERE substr(id, 1, ?) = ?", (len(prefix), prefix))
    if rows is None or len(rows) != 1:
        return None
    _reaped(url, rows)
    return rows[0]
