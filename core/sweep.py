"""``rlx sweep``'s controller: a spec's runs handed to a launcher, tracked as one sweep.

The controller alone decides what runs (each cell x seed, with the run id it assigns)
and alone creates the sweep's parent MLflow run; every run is an ordinary ``rlx run``
(``rlx runs resume`` when continued) that tracks itself, nested under the parent through
``rlx.sweep_member``. The catalog holds the sweep, its plan and its controller's pid, so
``rlx sweep resume`` knows what finished after any ending, SIGKILL included.

Signals: the first Ctrl-C / SIGTERM / SIGHUP stops starting runs and passes the signal
to those in flight (each checkpoints and ends KILLED); a second one passes it again (they
stop at once). A SIGKILLed controller takes its local runs with it (they get SIGTERM,
checkpoint and end KILLED; see ``rlx.interrupts.die_with_parent``) and its sweep reads
CRASHED until resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlx import home as rlx_home
from rlx.errors import RlxError, UsageError
from rlx.launcher import Launcher, RunExit, RunRequest
from rlx.sweep_member import SweepMember
from rlx.sweep_spec import PlannedRun, SweepSpec

POLL_S = 0.5
# variables a run needs from the controller's environment wherever it is launched
_PASS = ("RLX_CATALOG_URL", "RLX_TRACKING", "RLX_DISABLE_PLUGINS", "RLX_PLUGIN_TIMEOUT", "RLX_DB_TIMEOUT",
         "RLX_DEBUG", "PYTHONPATH", "MLFLOW_TRACKING_URI")


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def sweep_dir(sweep_id: str) -> Path:
    return rlx_home.home() / "sweeps" / sweep_id


@dataclass
class RunState:
    """What the controller knows of one planned run while the sweep goes on."""

    planned: PlannedRun
    action: str = "start"  # start | resume | wait (still running after a controller died) | skip
    status: str = "PENDING"  # PENDING, RUNNING, then the catalog's word
    error: str = ""
    started: float = 0.0
    ended: float = 0.0
    progress: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # where it ran, as the launcher says

    @property
    def launch_s(self) -> float | None:
        """Seconds from handing the run to the launcher to its first trained step (this
        controller's launch: imports, building the parts, opening the stores)."""
        first = self.progress.get("first_step_at")
        return first - self.started if first and self.started else None


@dataclass
class SweepOutcome:
    sweep_id: str
    status: str  # FINISHED, FAILED, KILLED
    runs: list[RunState]
    parent_run_id: str
    tracking_uri: str
    seconds: float
    comparison: Any = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.runs if r.status == status)


def launcher_for(registry: Any, name: str | None, settings: dict[str, Any]) -> tuple[str, Launcher]:
    """The named launcher (else the one registered as the default) with its settings validated."""
    from rlx.config import validate_section

    if not name:
        marked = [s for s in registry.components["launcher"].values() if s.meta["default"] and not s.unavailable]
        if len(marked) != 1:
            raise UsageError("no launcher named and " + ("none is registered as the default" if not marked else
                             f"several are ({', '.join(s.name for s in marked)})") + "; pass --launcher NAME")
        name = marked[0].name
    spec = registry.get("launcher", name)
    cfg = validate_section("launcher", spec.config, settings)
    return name, spec.build(cfg)


def _checkpointed(run_id: str) -> bool:
    from rlx import checkpoint

    return checkpoint.latest(rlx_home.runs_dir() / run_id / "checkpoints") is not None


class Controller:
    """Runs one sweep's runs to their ends through a launcher and records what happened."""

    def __init__(self, record: Any, spec: SweepSpec, states: list[RunState], catalog: Any, launcher: Launcher,
                 capacity: int, *, live: bool = True):
        self.record, self.spec, self.states, self.catalog, self.launcher = record, spec, states, catalog, launcher
        self.live, self.capacity = live, max(1, capacity)
        self.dir = sweep_dir(record.id)
        self.uri = record.tracking_uri
        self._signals: list[int] = []
        self._forwarded = 0

    # -- the loop ----------------------------------------------------------------------
    def execute(self) -> str:
        """Run every state's action; the sweep's final status."""
        from rlx.interrupts import handling

        todo = [s for s in self.states if s.action in ("start", "resume")]
        waiting = [s for s in self.states if s.action == "wait"]
        inflight: dict[str, RunState] = {}
        capacity = self.capacity
        with handling(self._on_signal), self._display() as show:
            try:
                threads = self.launcher.threads_per_run(max(1, min(capacity, len(todo) or 1)))
                while todo or inflight or waiting:
                    if self._signals and self._forwarded < len(self._signals):
                        self._forwarded += 1
                        self.launcher.signal(self._signals[self._forwarded - 1])
                    if not self._signals:
                        while todo and len(inflight) < capacity:
                            state = todo.pop(0)
                            self._submit(state, threads)
                            inflight[state.planned.run_id] = state
                    elif todo:  # a signal: nothing new starts; what never started stays PENDING
                        todo.clear()
                    for ended in self.launcher.poll():
                        state = inflight.pop(ended.run_id, None)
                        if state is not None:
                            self._ended(state, ended)
                    waiting = self._adopt(waiting, todo)
                    self._progress(inflight.values())
                    show()
                    if inflight or waiting:
                        time.sleep(POLL_S)
            finally:
                self.launcher.close()
                for state in inflight.values():  # close() stopped them: their rows say how they ended
                    self._ended(state, RunExit(state.planned.run_id, None, "stopped when the sweep ended"))
            show()
        return self._final_status()

    def _on_signal(self, signum: int, frame: Any) -> None:
        from rlx.interrupts import signal_name

        self._signals.append(signum)
        name = signal_name(signum)
        if len(self._signals) == 1:
            _say(f"{name}: stopping the sweep: runs in flight checkpoint and end KILLED ({name} again to stop "
                 "them at once); `rlx sweep resume` continues")
        else:
            _say(f"{name}: stopping the runs in flight at once")

    def _submit(self, state: RunState, threads: int) -> None:
        p = state.planned
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        if state.action == "start":
            cfg_path = self.dir / "configs" / f"{p.run_id}.json"
            cfg = json.loads(cfg_path.read_text())
            if not cfg["run"].get("threads"):  # the user's own threads setting wins
                cfg["run"]["threads"] = threads
                cfg_path.write_text(json.dumps(cfg, indent=2))
            argv = ["run", "--config", str(cfg_path), "--no-progress"]
            argv += ["--tracking-uri", self.uri] if self.uri else ["--no-tracking"]
        else:
            argv = ["runs", "resume", p.run_id, "--no-progress"]
        member = SweepMember(self.record.id, p.cell, p.values, self.record.mlflow_run_id)
        env = {k: os.environ[k] for k in _PASS if k in os.environ}
        env.update({"RLX_HOME": str(rlx_home.home()), "RLX_RUN_ID": p.run_id, "PYTHONUNBUFFERED": "1",
                    **member.to_env()})
        self.launcher.submit(RunRequest(p.run_id, p.label, argv, env, self.dir / "logs" / f"{p.run_id}.log",
                                        threads=threads))
        state.status, state.started, state.error = "RUNNING", time.time(), ""

    def _ended(self, state: RunState, ended: RunExit) -> None:
        """Read how the run ended from the catalog (the run's own record); a run that never
        got a row failed before it started (bad plugin, bad store): its log says why."""
        state.ended, state.where = time.time(), ended.where
        self._progress([state])  # its last heartbeat: the first step's time, the last step
        row = self.catalog.runs_of([state.planned.run_id]).get(state.planned.run_id)
        if row is not None and row.status != "RUNNING":
            state.status, state.error = row.status, row.error
            state.progress["metrics"] = {k: v for k, v in row.metrics.items() if k in (row.headline or "").split(",")}
            return
        if row is not None:  # RUNNING with its process gone and not yet reaped: it died
            self.catalog._reap([row])
            state.status, state.error = "CRASHED", row.error or "the run's process died"
            return
        state.status = "FAILED"
        state.error = ended.message or _last_error(self.dir / "logs" / f"{state.planned.run_id}.log") or \
            f"exited with code {ended.code} before it started"
        state.planned.failed = state.error  # no catalog row says so: the plan does, for `rlx sweep resume`
        self._save_plan()

    def _save_plan(self) -> None:
        self.catalog.update_sweep(self.record.id, plan=[s.planned.to_json() for s in self.states])

    def _adopt(self, waiting: list[RunState], todo: list[RunState]) -> list[RunState]:
        """Runs a dead controller left running (on another node, or still checkpointing):
        once they end, they join the queue to be resumed, or are done."""
        if not waiting:
            return waiting
        rows = self.catalog.runs_of([s.planned.run_id for s in waiting])
        still = []
        for state in waiting:
            row = rows.get(state.planned.run_id)
            if row is not None and row.status == "RUNNING":
                still.append(state)
                continue
            status = row.status if row is not None else "CRASHED"
            if status == "FINISHED":
                state.status, state.action = status, "skip"
            elif self._signals:
                state.status = status
            else:
                state.action = "resume" if _checkpointed(state.planned.run_id) else "start"
                if state.action == "start":
                    self._replace(state)
                todo.append(state)
        return still

    def _replace(self, state: RunState) -> None:
        """A fresh run in place of one that cannot continue (no checkpoint, or failed and
        retried): a new run id with the same cell, seed and config; the plan follows."""
        old = state.planned.run_id
        configs = self.dir / "configs"
        new = new_id()
        shutil.copy(configs / f"{old}.json", configs / f"{new}.json")
        state.planned.run_id, state.planned.failed = new, ""
        self._save_plan()

    def _progress(self, running: Any) -> None:
        from rlx.progress_file import read

        for state in running:
            beat = read(rlx_home.runs_dir() / state.planned.run_id)
            if beat:
                state.progress = beat

    def _final_status(self) -> str:
        if self._signals:
            return "KILLED"
        return "FINISHED" if all(s.status == "FINISHED" for s in self.states) else "FAILED"

    # -- the terminal --------------------------------------------------------------------
    def _display(self) -> Any:
        """A live table on a terminal; elsewhere a line per run as it starts and ends."""
        from contextlib import contextmanager

        from rich.console import Console

        console = Console(stderr=True)
        live_table = self.live and console.is_terminal

        @contextmanager
        def shown() -> Any:
            if live_table:
                from rich.live import Live

                with Live(self._table(), console=console, refresh_per_second=2, transient=False) as live:
                    yield lambda: live.update(self._table())
            else:
                said: dict[str, str] = {}

                def lines() -> None:
                    total = len(self.states)
                    for i, s in enumerate(self.states, 1):
                        if said.get(s.planned.run_id) != s.status and s.status != "PENDING":
                            said[s.planned.run_id] = s.status
                            if s.action == "skip" and s.status == "FINISHED":
                                continue
                            extra = _metrics_text(s) if s.status == "FINISHED" else s.error
                            took = f" ({s.ended - s.started:.0f} s)" if s.ended and s.started else ""
                            _say(f"[{i}/{total}] run {s.planned.run_id} {s.planned.label}: {s.status}{took}"
                                 + (f" {extra}" if extra else ""))

                yield lines

        return shown()

    def _table(self) -> Any:
        from rich.table import Table

        done = sum(1 for s in self.states if s.status not in ("PENDING", "RUNNING"))
        table = Table(title=f"sweep {self.record.id} {self.spec.name}: {done}/{len(self.states)} ended",
                      box=None, header_style="bold", title_justify="left")
        for col in ("run", "cell", "seed", "state", "step", "headline", "eta"):
            table.add_column(col, no_wrap=True)
        now = time.time()
        shown = [s for s in self.states if s.status == "RUNNING"] + \
                [s for s in self.states if s.status not in ("RUNNING", "PENDING")][-8:]
        pending = sum(1 for s in self.states if s.status == "PENDING")
        for s in shown:
            p = s.progress
            step, steps = p.get("step"), p.get("steps")
            eta = "-"
            if s.status == "RUNNING" and step and steps and s.started:
                eta = f"{(now - s.started) / step * (steps - step):.0f}s"
            table.add_row(s.planned.run_id, s.planned.cell, str(s.planned.seed), s.status,
                          f"{step}/{steps}" if step is not None else "-", _metrics_text(s) or "-", eta)
        if pending:
            table.add_row("", f"... {pending} pending", "", "", "", "", "")
        return table


def _metrics_text(state: RunState) -> str:
    metrics = state.progress.get("metrics") or {}
    shown = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={v:.4g}" for k, v in shown[:2])


def _last_error(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error: ")]
    return errors[-1][len("error: "):] if errors else ""


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# -- the sweep's record and parent run ---------------------------------------------------------
def _open_parent(uri: str, experiment: str, spec: SweepSpec, sweep_id: str, plan: list[PlannedRun]) -> str:
    """The sweep's parent MLflow run: its spec and plan as artifacts, its shape as params."""
    from rlx.tracking import _check_reachable, _client, _first_line, experiment_id

    try:
        _check_reachable(uri)
        client = _client(uri)
        with rlx_home.store_lock(uri):
            exp_id = experiment_id(client, experiment, rlx_home.artifact_root(uri))
            run = client.create_run(exp_id, run_name=f"sweep {spec.name}", tags={
                "rlx.sweep": sweep_id, "rlx.sweep_role": "parent", "rlx.status": "RUNNING",
                "rlx.command": "rlx " + " ".join(sys.argv[1:]), "mlflow.source.name": "rlx",
                "rlx.sweep_metric": spec.metric or ""})
        from mlflow.entities import Param

        axes = sorted({k for c in spec.cells for k in c.values})
        params = [Param("sweep.name", spec.name), Param("sweep.cells", str(len(spec.cells))),
                  Param("sweep.seeds", ",".join(map(str, spec.seeds))), Param("sweep.runs", str(len(plan))),
                  Param("sweep.axes", ",".join(axes)[:6000] or "-")]
        client.log_batch(run.info.run_id, params=params, synchronous=True)
        client.log_text(run.info.run_id, json.dumps(spec.to_json(), indent=2), "sweep/spec.json")
        client.log_text(run.info.run_id, json.dumps([p.to_json() for p in plan], indent=2), "sweep/plan.json")
        return run.info.run_id
    except RlxError:
        raise
    except Exception as exc:
        raise RlxError(f"cannot create the sweep's parent run in the MLflow store '{uri}': {_first_line(exc)}; "
                       "check --tracking-uri or MLFLOW_TRACKING_URI") from None


def _end_parent(uri: str, run_id: str, status: str, summary: str) -> None:
    if not run_id:
        return
    try:
        from rlx.status import end_in_mlflow
        from rlx.tracking import _client

        client = _client(uri)
        client.set_tag(run_id, "rlx.summary", summary)
        if status == "FINISHED":
            end_in_mlflow(client, run_id, "FINISHED")
        else:
            end_in_mlflow(client, run_id, status, summary)
    except Exception as exc:  # the sweep's runs are recorded; say it and go on
        _say(f"warning: could not end the sweep's parent MLflow run {run_id}: {exc}")


def _reopen_parent(uri: str, run_id: str) -> None:
    if not run_id:
        return
    from rlx.tracking import _client

    client = _client(uri)
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "rlx.status", "RUNNING")


def summary_of(states: list[RunState]) -> str:
    order = ("FINISHED", "FAILED", "KILLED", "CRASHED", "PENDING")
    counts = {k: sum(1 for s in states if s.status == k) for k in order}
    return ", ".join(f"{n} {k.lower() if k != 'PENDING' else 'not started'}" for k, n in counts.items() if n)


# -- entry points ---------------------------------------------------------------------------
def start(spec: SweepSpec, registry: Any, catalog: Any, *, tracking_uri: str | None = None, live: bool = True,
          launcher_name: str | None = None, launcher_settings: dict[str, Any] | None = None,
          max_parallel: int | None = None) -> SweepOutcome:
    """Validate every cell, record the sweep and its parent run, and run it."""
    from rlx.registry.catalog import SweepRecord
    from rlx.sweep_spec import expand
    from rlx.tracking import enabled

    spec.launcher = launcher_name or spec.launcher
    spec.launcher_settings = {**spec.launcher_settings, **(launcher_settings or {})}
    spec.max_parallel = max_parallel or spec.max_parallel
    plan = expand(spec, registry, new_id)  # every cell validated: nothing has started yet
    name, launcher = launcher_for(registry, spec.launcher, spec.launcher_settings)
    spec.launcher = name
    experiment = plan[0].config["run"]["experiment"]
    sweep_id = new_id()
    uri = rlx_home.tracking_uri(tracking_uri) if enabled() else ""
    capacity = launcher.open(spec.max_parallel)  # an unreachable cluster fails here, with nothing recorded
    try:
        parent = _open_parent(uri, experiment, spec, sweep_id, plan) if uri else ""
        folder = sweep_dir(sweep_id)
        (folder / "configs").mkdir(parents=True, exist_ok=True)
        for p in plan:
            (folder / "configs" / f"{p.run_id}.json").write_text(json.dumps(p.config, indent=2))
        (folder / "spec.json").write_text(json.dumps(spec.to_json(), indent=2))
        record = SweepRecord(id=sweep_id, name=spec.name, experiment=experiment, tracking_uri=uri,
                             mlflow_run_id=parent, launcher=name, spec_json=json.dumps(spec.to_json()),
                             plan_json=json.dumps([p.to_json() for p in plan]))
        catalog.add_sweep(record)
    except BaseException:
        launcher.close()
        raise
    _say(f"sweep {sweep_id} {spec.name}: {len(plan)} runs ({len(spec.cells)} cells x {len(spec.seeds)} seeds) "
         f"on launcher '{name}'" + (f"; parent MLflow run {parent}" if parent else "; tracking off"))
    states = [RunState(p) for p in plan]
    return _run(Controller(record, spec, states, catalog, launcher, capacity, live=live))


def resume(sweep_id: str, registry: Any, catalog: Any, *, retry_failed: bool = False, live: bool = True,
           launcher_name: str | None = None, launcher_settings: dict[str, Any] | None = None,
           max_parallel: int | None = None) -> SweepOutcome:
    """Continue a sweep: finished runs stay, killed and crashed ones resume from their
    checkpoints (or start again without one), failed ones rerun only with ``retry_failed``,
    runs never started start."""
    record = catalog.get_sweep(sweep_id)
    if record.status == "RUNNING":
        raise UsageError(f"sweep {record.id} is still running (controller pid {record.pid} on {record.host}); "
                         "stop it before resuming")
    spec = SweepSpec.from_json(record.spec)
    if launcher_name:
        spec.launcher, spec.launcher_settings = launcher_name, {}
    spec.launcher_settings.update(launcher_settings or {})
    spec.max_parallel = max_parallel or spec.max_parallel
    name, launcher = launcher_for(registry, spec.launcher, spec.launcher_settings)
    plan = [PlannedRun(p["run_id"], p["cell"], p["values"], p["seed"], failed=p.get("failed", "")) for p in record.plan]
    rows = catalog.runs_of([p.run_id for p in plan])
    states = []
    for p in plan:
        state = RunState(p)
        row = rows.get(p.run_id)
        if row is None and p.failed and not retry_failed:  # it failed before it had a row
            state.action, state.status, state.error = "skip", "FAILED", p.failed
        elif row is None:
            state.action = "start"
        elif row.status == "FINISHED":
            state.action, state.status = "skip", "FINISHED"
        elif row.status == "RUNNING":
            state.action, state.status = "wait", "RUNNING"
        elif row.status == "FAILED" and not retry_failed:
            state.action, state.status, state.error = "skip", "FAILED", row.error
        else:
            state.action = "resume" if row.status != "FAILED" and _checkpointed(p.run_id) else "start"
        states.append(state)
    if all(s.action == "skip" for s in states):
        failed = sum(1 for s in states if s.status == "FAILED")
        if failed:
            raise UsageError(f"sweep {record.id}: nothing to resume but {failed} FAILED run(s); rerun them with "
                             f"`rlx sweep resume {record.id} --retry-failed`")
        raise UsageError(f"sweep {record.id} already FINISHED all {len(states)} runs; nothing to resume "
                         f"(compare it with `rlx compare {record.id}`)")
    if not catalog.claim_sweep(record.id):
        raise UsageError(f"sweep {record.id} was taken by another `rlx sweep resume`; let it finish")
    try:
        capacity = launcher.open(spec.max_parallel)
    except BaseException as exc:
        catalog.update_sweep(record.id, status=record.status, summary=f"resume failed: {exc}")
        raise
    ctl = Controller(record, spec, states, catalog, launcher, capacity, live=live)
    for state in states:
        if state.action == "start" and (rows.get(state.planned.run_id) is not None or state.planned.failed):
            ctl._replace(state)  # failed, or stopped before its first checkpoint: a fresh run
    _reopen_parent(record.tracking_uri, record.mlflow_run_id)
    todo = sum(1 for s in states if s.action != "skip")
    _say(f"resuming sweep {record.id} {spec.name}: {len(states) - todo} of {len(states)} runs already ended "
         f"({summary_of([s for s in states if s.action == 'skip']) or 'none'}); {todo} to run on launcher '{name}'")
    return _run(ctl)


def _run(ctl: Controller) -> SweepOutcome:
    from datetime import datetime, timezone

    began = time.time()
    record, states = ctl.record, ctl.states
    status, problem = "FAILED", ""
    try:
        status = ctl.execute()
    except BaseException as exc:  # the controller's own failure: its runs were stopped by close()
        problem = f"; the controller failed: {exc}"
        raise
    finally:
        summary = summary_of(states) + problem
        catalog = ctl.catalog
        catalog.update_sweep(record.id, status=status, summary=summary, ended_at=datetime.now(timezone.utc))
        _end_parent(record.tracking_uri, record.mlflow_run_id, status, summary)
    return SweepOutcome(record.id, status, states, record.mlflow_run_id, record.tracking_uri, time.time() - began)
