"""The catalog: SQLModel tables of plugins and runs (SQLite under RLX_HOME by default,
any SQLAlchemy URL through RLX_CATALOG_URL)."""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator, Optional

from sqlmodel import Field, Session, SQLModel, create_engine, select

from rlx.errors import RlxError, UsageError
from rlx.registry.catalog_read import RunJson, _alive, _started


def _now() -> datetime:
    return datetime.now(timezone.utc)


class PluginRecord(SQLModel, table=True):
    __tablename__ = "plugins"
    name: str = Field(primary_key=True)
    kinds: str = ""
    components: str = ""
    distribution: str = ""
    version: str = ""
    status: str = ""
    seen_at: datetime = Field(default_factory=_now)


class RunRecord(RunJson, SQLModel, table=True):
    __tablename__ = "runs"
    id: str = Field(primary_key=True)
    name: str = ""
    status: str = Field(default="RUNNING", index=True)
    objective: str = Field(default="", index=True)
    rewards: str = ""
    env: str = Field(default="", index=True)
    policy: str = ""
    seed: int = 0
    experiment: str = ""
    mlflow_run_id: str = ""
    tracking_uri: str = ""
    checkpoint: str = ""  # the newest resumable checkpoint
    policy_dir: str = ""  # the final policy (save_pretrained)
    config_json: str = "{}"
    metrics_json: str = "{}"
    command: str = ""
    host: str = ""
    pid: int = 0
    pid_started: float = 0.0
    num_processes: int = 1  # a resume runs with as many: each rank's RNG state and data slice
    accelerate_config: str = ""  # the --accelerate-config file it was launched with
    error: str = ""
    headline: str = ""  # the metrics its objective's and kind's registrations name, comma-separated
    note: str = ""  # how a run that FINISHED early ended (the plugin that stopped it)
    sweep_id: str = Field(default="", index=True)  # the sweep that started it (rlx sweep), if any
    cell: str = ""  # its cell in that sweep
    created_at: datetime = Field(default_factory=_now)
    ended_at: Optional[datetime] = None


class SweepRecord(SQLModel, table=True):
    """One ``rlx sweep``: its plan (every run it owns, with cell and seed) and its controller."""

    __tablename__ = "sweeps"
    id: str = Field(primary_key=True)
    name: str = ""
    status: str = Field(default="RUNNING", index=True)  # RUNNING, FINISHED, FAILED, KILLED, CRASHED
    experiment: str = ""
    tracking_uri: str = ""
    mlflow_run_id: str = ""  # the parent run the sweep's runs nest under
    launcher: str = ""
    spec_json: str = "{}"  # the validated spec: base config, cells, seeds, launcher settings
    plan_json: str = "[]"  # [{run_id, cell, values, seed}], in launch order
    summary: str = ""  # how it ended: "15 finished", "13 finished, 2 failed", ...
    host: str = ""
    pid: int = 0
    pid_started: float = 0.0
    created_at: datetime = Field(default_factory=_now)
    ended_at: Optional[datetime] = None

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json or "{}")

    @property
    def plan(self) -> list[dict[str, Any]]:
        return json.loads(self.plan_json or "[]")


def _owned_here() -> dict[str, Any]:
    """The columns that say this process runs the run now."""
    return {"status": "RUNNING", "host": socket.gethostname(), "pid": os.getpid(), "pid_started": _started(os.getpid()),
            "ended_at": None, "error": ""}


def _end_in_mlflow(rec: Any, status: str, error: str) -> None:
    """Say in the run's MLflow store what the catalog says; quietly, where the store is
    gone (the catalog keeps the truth, and a resume sets both again)."""
    if not rec.mlflow_run_id:
        return
    try:
        from rlx.status import end_in_mlflow
        from rlx.tracking import _client

        end_in_mlflow(_client(rec.tracking_uri), rec.mlflow_run_id, status, error, if_running=True)
    except Exception:
        pass


class Catalog:
    def __init__(self, url: str):
        from rlx.home import sqlite_path
        from rlx.registry.catalog_read import db_timeout

        path = sqlite_path(url)  # percent-decoded, as SQLAlchemy opens it
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create rlx home '{path.parent}': {exc.strerror}; "
                                 "set RLX_HOME to a writable directory") from None
        self.url = url
        # SQLite waits this long for another process's write lock before giving up
        wait = db_timeout()
        self.engine = create_engine(url, connect_args={"timeout": wait} if url.startswith("sqlite") else {})
        try:
            from rlx.home import store_lock

            with store_lock(url):  # several processes may open a new catalog at once
                SQLModel.metadata.create_all(self.engine)
                self._add_missing_columns()
                self._follow_home()
        except RlxError:
            raise
        except Exception as exc:
            if "locked" in str(exc):
                raise RlxError(f"the catalog '{url}' is locked by another process; retry when it is done, "
                               "or raise RLX_DB_TIMEOUT (seconds to wait, default 30)") from None
            raise RlxError(f"cannot open the catalog '{url}': {str(exc).splitlines()[0]}; "
                           "check RLX_HOME / RLX_CATALOG_URL") from None

    def _follow_home(self) -> None:
        """The home's own catalog, in a home that was moved or copied: its stored paths follow
        (rlx.registry.relocation)."""
        import sys

        from rlx.home import home, sqlite_path

        if os.environ.get("RLX_CATALOG_URL") or sqlite_path(self.url) != home() / "catalog.db":
            return
        from rlx.registry.relocation import follow

        note = follow(home())
        if note:
            sys.stderr.write(f"note: {note}\n")

    @contextmanager
    def _session(self) -> Iterator[Session]:
        from sqlalchemy.exc import OperationalError

        try:
            with Session(self.engine) as s:
                yield s
        except OperationalError as exc:
            if "locked" in str(exc):
                raise RlxError(f"the catalog '{self.url}' is locked by another process; retry when it is done, "
                               "or raise RLX_DB_TIMEOUT (seconds to wait, default 30)") from None
            raise RlxError(f"catalog '{self.url}' error: {str(exc.orig)}; check RLX_HOME / RLX_CATALOG_URL") from None

    def _add_missing_columns(self) -> None:
        """Catalogs made by an older rlx gain the columns added since (SQLite can add, not alter)."""
        from sqlalchemy import inspect, text

        insp = inspect(self.engine)
        with self.engine.begin() as con:
            for table in SQLModel.metadata.sorted_tables:
                have = {c["name"] for c in insp.get_columns(table.name)}
                for col in table.columns:
                    if col.name not in have:
                        kind = col.type.compile(dialect=self.engine.dialect)
                        con.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {kind}'))

    # -- runs ----------------------------------------------------------------------
    def add_run(self, record: RunRecord) -> None:
        record.host, record.pid, record.pid_started = socket.gethostname(), os.getpid(), _started(os.getpid())
        with self._session() as s:
            s.add(record)
            s.commit()

    def mark_running(self, run_id: str) -> None:
        """A resumed run: this process now owns it (it was claimed with ``claim``)."""
        self.update_run(run_id, **_owned_here())

    def claim(self, run_id: str) -> bool:
        """Take an ended, unfinished run for this process to resume; False if it is not
        resumable any more (another process claimed it first, or it finished). One
        statement, so two resumes racing cannot both win."""
        from sqlalchemy import update

        from rlx.status import RESUMABLE

        stmt = (update(RunRecord).where(RunRecord.id == run_id, RunRecord.status.in_(RESUMABLE))  # type: ignore
                .values(**_owned_here()))
        with self._session() as s:
            claimed = s.exec(stmt).rowcount == 1  # type: ignore[call-overload]
            s.commit()
        return claimed

    def end_if_owned(self, run_id: str, pid: int, status: str, error: str) -> bool:
        """End a RUNNING run that process ``pid`` still owns (a resume may have taken it over)."""
        from sqlalchemy import update

        stmt = (update(RunRecord).where(RunRecord.id == run_id, RunRecord.status == "RUNNING",  # type: ignore
                                        RunRecord.pid == pid)
                .values(status=status, error=error, ended_at=_now()))
        with self._session() as s:
            ended = s.exec(stmt).rowcount == 1  # type: ignore[call-overload]
            s.commit()
        return ended

    def _reap(self, rows: list[RunRecord]) -> None:
        """RUNNING rows whose process is gone from this host are CRASHED (SIGKILL, OOM,
        power loss leave no chance to say so), in the catalog and in MLflow."""
        from rlx.status import CRASHED_ERROR

        host = socket.gethostname()
        dead = [r for r in rows if r.status == "RUNNING" and r.host == host and not _alive(r.pid, r.pid_started)]
        for r in dead:
            if self.end_if_owned(r.id, r.pid, "CRASHED", CRASHED_ERROR):
                _end_in_mlflow(r, "CRASHED", CRASHED_ERROR)
            r.status, r.error = "CRASHED", CRASHED_ERROR

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self._session() as s:
            rec = s.get(RunRecord, run_id)
            if rec is None:
                return
            for k, v in fields.items():
                if k in ("config", "metrics"):
                    k, v = f"{k}_json", json.dumps(v)
                setattr(rec, k, v)
            s.add(rec)
            s.commit()

    def list_runs(self, *, objective: str | None = None, reward: str | None = None, env: str | None = None,
                  status: str | None = None, sweep: str | None = None, limit: int = 50) -> list[RunRecord]:
        with self._session() as s:
            q = select(RunRecord)
            if sweep:
                q = q.where(RunRecord.sweep_id.startswith(sweep, autoescape=True))  # type: ignore[union-attr]
            if objective:
                q = q.where(RunRecord.objective == objective)
            if env:
                q = q.where(RunRecord.env == env)
            rows = list(s.exec(q.order_by(RunRecord.created_at.desc())))  # type: ignore[attr-defined]
        self._reap(rows)
        if status:
            rows = [r for r in rows if r.status == status.upper()]
        if reward:
            rows = [r for r in rows if reward in r.rewards.split(",")]
        return rows[:limit]

    def get_run(self, prefix: str) -> RunRecord:
        from rlx.registry.catalog_read import run_prefix

        rows = self._by_prefix(RunRecord, prefix, run_prefix(prefix), "run", "rlx runs list")
        self._reap(rows)
        return rows[0]

    def _by_prefix(self, table: Any, given: str, prefix: str, noun: str, listing: str) -> list[Any]:
        """The one row of ``table`` whose id starts with ``prefix``; a UsageError naming
        the fix when none or several do."""
        with self._session() as s:
            # autoescape: a prefix is text, never a LIKE pattern (ids are hex anyway)
            rows = list(s.exec(select(table).where(table.id.startswith(prefix, autoescape=True))))
        if not rows:
            raise UsageError(f"no {noun} '{given}' in the catalog; list {noun}s with `{listing}`")
        if len(rows) > 1:
            raise UsageError(f"{noun} id '{given}' is ambiguous ({len(rows)} {noun}s); give more characters")
        return rows

    def runs_of(self, ids: list[str]) -> dict[str, RunRecord]:
        """The catalog rows of these run ids that exist (dead owners reaped), by id."""
        with self._session() as s:
            rows = list(s.exec(select(RunRecord).where(RunRecord.id.in_(ids)))) if ids else []  # type: ignore
        self._reap(rows)
        return {r.id: r for r in rows}

    # -- sweeps ----------------------------------------------------------------------
    def add_sweep(self, record: SweepRecord) -> None:
        record.host, record.pid, record.pid_started = socket.gethostname(), os.getpid(), _started(os.getpid())
        with self._session() as s:
            s.add(record)
            s.commit()
            s.refresh(record)
            s.expunge(record)  # the controller keeps reading it after the session is gone

    def update_sweep(self, sweep_id: str, **fields: Any) -> None:
        with self._session() as s:
            rec = s.get(SweepRecord, sweep_id)
            if rec is None:
                return
            for k, v in fields.items():
                if k == "plan":
                    k, v = "plan_json", json.dumps(v)
                setattr(rec, k, v)
            s.add(rec)
            s.commit()

    def claim_sweep(self, sweep_id: str) -> bool:
        """Take an ended sweep for this process to continue (``rlx sweep resume``); False if
        another controller holds it. One statement, so two resumes cannot both win."""
        from sqlalchemy import update

        owned = {k: v for k, v in _owned_here().items() if k != "error"}
        stmt = (update(SweepRecord).where(SweepRecord.id == sweep_id, SweepRecord.status != "RUNNING")  # type: ignore
                .values(**owned))
        with self._session() as s:
            claimed = s.exec(stmt).rowcount == 1  # type: ignore[call-overload]
            s.commit()
        return claimed

    def _reap_sweeps(self, rows: list[SweepRecord]) -> None:
        """A RUNNING sweep whose controller is gone from this host is CRASHED."""
        host = socket.gethostname()
        for r in rows:
            if r.status == "RUNNING" and r.host == host and not _alive(r.pid, r.pid_started):
                why = f"the controller (pid {r.pid}) died; `rlx sweep resume {r.id}` continues it"
                self.update_sweep(r.id, status="CRASHED", ended_at=_now(), summary=why)
                _end_in_mlflow(r, "CRASHED", why)  # its parent run, so the UI does not show it running
                r.status, r.summary = "CRASHED", why

    def list_sweeps(self, limit: int = 50) -> list[SweepRecord]:
        with self._session() as s:
            rows = list(s.exec(select(SweepRecord).order_by(SweepRecord.created_at.desc())))  # type: ignore
        self._reap_sweeps(rows)
        return rows[:limit]

    def get_sweep(self, prefix: str) -> SweepRecord:
        """The sweep whose id starts with ``prefix``; a UsageError naming the fix otherwise."""
        norm = prefix.strip().lower()
        import re

        if not re.fullmatch(r"[0-9a-f]{1,12}", norm):
            raise UsageError(f"no sweep '{prefix}': sweep ids are 12 hex digits (0-9, a-f), or a prefix of one; "
                             "list sweeps with `rlx sweep list`")
        rows = self._by_prefix(SweepRecord, prefix, norm, "sweep", "rlx sweep list")
        self._reap_sweeps(rows)
        return rows[0]

    # -- plugins -------------------------------------------------------------------
    def sync_plugins(self, rows: list[dict[str, Any]]) -> None:
        by_family: dict[str, dict[str, Any]] = {}
        for r in rows:
            rec = by_family.setdefault(r["family"], {"kinds": set(), "components": [], **r})
            rec["kinds"].add(r["kind"])
            rec["components"].append(r["name"])
        from sqlalchemy.exc import IntegrityError

        from rlx.home import store_lock

        # merge is a read, then an insert: two runs starting at once on a new catalog (a
        # sweep's) would both insert the same plugin rows; SQLite's file lock orders them,
        # and on other databases the one that lost the race merges again
        for attempt in range(3):
            try:
                with store_lock(self.url), self._session() as s:
                    for fam, r in by_family.items():
                        s.merge(PluginRecord(name=fam, kinds=",".join(sorted(r["kinds"])),
                                             components=",".join(r["components"]), distribution=r["distribution"],
                                             version=r["version"], status=r["status"], seen_at=_now()))
                    s.commit()
                return
            except IntegrityError:
                if attempt == 2:
                    raise
