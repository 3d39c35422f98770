"""The catalog: SQLModel tables of plugins and runs (SQLite under RLX_HOME by default,
any SQLAlchemy URL through RLX_CATALOG_URL)."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from rlx.errors import RlxError, UsageError
from sqlmodel import Field, Session, SQLModel, create_engine, select


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


class RunRecord(SQLModel, table=True):
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
    checkpoint: str = ""
    config_json: str = "{}"
    metrics_json: str = "{}"
    command: str = ""
    host: str = ""
    pid: int = 0
    error: str = ""
    created_at: datetime = Field(default_factory=_now)
    ended_at: Optional[datetime] = None

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json or "{}")

    @property
    def metrics(self) -> dict[str, float]:
        return json.loads(self.metrics_json or "{}")


class Catalog:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create rlx home '{path.parent}': {exc.strerror}; "
                                 "set RLX_HOME to a writable directory") from None
        self.url = url
        self.engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        try:
            SQLModel.metadata.create_all(self.engine)
        except Exception as exc:
            raise RlxError(f"cannot open the catalog '{url}': {str(exc).splitlines()[0]}; "
                           "check RLX_HOME / RLX_CATALOG_URL") from None

    # -- runs ----------------------------------------------------------------------
    def add_run(self, record: RunRecord) -> None:
        record.host = record.host or socket.gethostname()
        with Session(self.engine) as s:
            s.add(record)
            s.commit()

    def update_run(self, run_id: str, **fields: Any) -> None:
        with Session(self.engine) as s:
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
                  status: str | None = None, limit: int = 50) -> list[RunRecord]:
        with Session(self.engine) as s:
            q = select(RunRecord)
            if objective:
                q = q.where(RunRecord.objective == objective)
            if env:
                q = q.where(RunRecord.env == env)
            if status:
                q = q.where(RunRecord.status == status.upper())
            rows = list(s.exec(q.order_by(RunRecord.created_at.desc())))  # type: ignore[attr-defined]
        if reward:
            rows = [r for r in rows if reward in r.rewards.split(",")]
        return rows[:limit]

    def get_run(self, prefix: str) -> RunRecord:
        with Session(self.engine) as s:
            rows = list(s.exec(select(RunRecord).where(RunRecord.id.startswith(prefix))))  # type: ignore[attr-defined]
        if not rows:
            raise UsageError(f"no run '{prefix}' in the catalog; list runs with `rlx runs list`")
        if len(rows) > 1:
            raise UsageError(f"run id '{prefix}' is ambiguous ({len(rows)} runs); give more characters")
        return rows[0]

    # -- plugins -------------------------------------------------------------------
    def sync_plugins(self, rows: list[dict[str, Any]]) -> None:
        by_family: dict[str, dict[str, Any]] = {}
        for r in rows:
            rec = by_family.setdefault(r["family"], {"kinds": set(), "components": [], **r})
            rec["kinds"].add(r["kind"])
            rec["components"].append(r["name"])
        with Session(self.engine) as s:
            for fam, r in by_family.items():
                s.merge(PluginRecord(name=fam, kinds=",".join(sorted(r["kinds"])),
                                     components=",".join(r["components"]), distribution=r["distribution"],
                                     version=r["version"], status=r["status"], seen_at=_now()))
            s.commit()

    def plugins(self) -> list[PluginRecord]:
        with Session(self.engine) as s:
            return list(s.exec(select(PluginRecord)))
