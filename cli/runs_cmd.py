"""``rlx runs list|show|resume`` over the catalog."""

from __future__ import annotations

import json
from typing import Optional

import typer

app = typer.Typer(help="Runs recorded in the catalog.", no_args_is_help=True)


def _catalog():
    from rlx import home
    from rlx.registry.catalog import Catalog

    return Catalog(home.catalog_url())


def _list_runs(**filters):
    """Read with sqlite3 where the catalog is a SQLite file (no SQLAlchemy import), else
    through the catalog."""
    from rlx import home
    from rlx.registry import catalog_read

    rows = catalog_read.list_runs(home.catalog_url(), **filters)
    return rows if rows is not None else _catalog().list_runs(**filters)


def _get_run(run_id: str):
    from rlx import home
    from rlx.registry import catalog_read

    rec = catalog_read.get_run(home.catalog_url(), run_id)
    return rec if rec is not None else _catalog().get_run(run_id)


STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "CRASHED")


def _dumps(value) -> str:
    from rlx.jsonable import finite

    return json.dumps(finite(value), indent=2, allow_nan=False)


def _text(value) -> str:
    """User text (run names, commands, errors, paths) for rich: ``[...]`` in it is shown,
    not read as markup."""
    from rich.markup import escape

    return escape(str(value))


def _row(r) -> dict:
    return {"id": r.id, "name": r.name, "status": r.status, "objective": r.objective, "rewards": r.rewards,
            "env": r.env, "policy": r.policy, "seed": r.seed, "experiment": r.experiment,
            "mlflow_run_id": r.mlflow_run_id, "tracking_uri": r.tracking_uri, "checkpoint": r.checkpoint,
            "policy_dir": r.policy_dir, "host": r.host, "pid": r.pid,
            "created_at": r.created_at.isoformat(timespec="seconds"),
            "ended_at": r.ended_at.isoformat(timespec="seconds") if r.ended_at else None,
            "metrics": r.metrics, "headline": [k for k in r.headline.split(",") if k], "error": r.error,
            "note": r.note, "command": r.command, "sweep_id": r.sweep_id or "", "cell": r.cell or ""}


def _headline(row: dict) -> dict[str, float]:
    """The run's headline metrics (as its registrations named them when it ran) that it logged."""
    return {k: row["metrics"][k] for k in row["headline"] if k in row["metrics"]}


@app.command("list")
def list_(objective: Optional[str] = typer.Option(None, help="Only runs of this objective."),
          reward: Optional[str] = typer.Option(None, help="Only runs using this reward source."),
          env: Optional[str] = typer.Option(None, help="Only runs on this environment."),
          status: Optional[str] = typer.Option(None, help=" | ".join(STATUSES) + "."),
          sweep: Optional[str] = typer.Option(None, help="Only runs of this sweep (id or prefix); grouped by cell."),
          limit: int = typer.Option(50, min=1, help="At most this many runs, newest first."),
          as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Recent runs, newest first."""
    if status is not None and status.strip().upper() not in STATUSES:
        from rlx.errors import UsageError

        raise UsageError(f"--status '{status}' is not a run status; use one of {', '.join(STATUSES)}")
    if sweep is not None:
        import re

        sweep = sweep.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{1,12}", sweep):
            from rlx.errors import UsageError

            raise UsageError(f"--sweep '{sweep}' is not a sweep id (12 hex digits, or a prefix of one); list sweeps "
                             "with `rlx sweep list`")
    rows = [_row(r) for r in _list_runs(objective=objective, reward=reward, env=env, sweep=sweep,
                                        status=status.strip() if status else None, limit=limit)]
    if sweep is not None:  # a sweep's runs read best cell by cell, seeds in order
        rows.sort(key=lambda r: (r["cell"], r["seed"]))
    if as_json:
        typer.echo(_dumps(rows))
        return
    from rich.table import Table

    from rlx.cli.output import console

    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("id", no_wrap=True, min_width=12)
    if sweep is not None:
        table.add_column("cell")
    for col in ("status", "objective", "rewards", "env", "policy", "seed", "headline"):
        table.add_column(col, no_wrap=col in ("status", "seed"))
    table.add_column("created", no_wrap=True)
    for r in rows:
        first = next(iter(_headline(r).items()), None)
        table.add_row(*map(_text, (r["id"], *([r["cell"]] if sweep is not None else []), r["status"],
                                   r["objective"], r["rewards"], r["env"], r["policy"], r["seed"])),
                      _text(f"{first[0]}={first[1]:.4g}") if first else "-", r["created_at"][5:16].replace("T", " "))
    console().print(table)


@app.command("show")
def show(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Config, status, MLflow run id, checkpoint path and key metrics of one run."""
    rec = _get_run(run_id)
    row = _row(rec)
    row["config"] = rec.config
    if as_json:
        typer.echo(_dumps(row))
        return
    from rlx.cli.output import console

    c = console()
    c.print(f"[bold]run {_text(row['id'])}[/bold]  {_text(row['name'])}  [bold]{_text(row['status'])}[/bold]")
    for k in ("objective", "rewards", "env", "policy", "seed", "experiment", "mlflow_run_id", "tracking_uri",
              "checkpoint", "policy_dir", "host", "pid", "created_at", "ended_at", "command", "note", "error"):
        if row[k] not in (None, ""):
            c.print(f"  {k:14} {_text(row[k])}")
    metrics = _headline(row)
    if metrics:
        c.print("  metrics        " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    c.print("  config")
    c.print_json(_dumps(row["config"]))


@app.command("resume")
def resume(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
           no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
           debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """Continue a crashed, killed or failed run from its newest checkpoint, in the same MLflow
    run, with as many processes as it was started with."""
    import os
    from pathlib import Path

    from rlx.cli import gcpause, launch

    gcpause.resume()  # a long-running command: collect garbage again
    from rlx import checkpoint, home
    from rlx.config import resolve
    from rlx.errors import UsageError
    from rlx.loop import Resume, train
    from rlx.registry import get_registry

    catalog = _catalog()
    rec = catalog.get_run(run_id)
    # a rank started by this command's own launcher: the parent below checked and claimed it
    claimed = launch.is_child() and os.environ.get("RLX_RESUME_CLAIMED") == rec.id
    ckpt = checkpoint.latest(home.runs_dir() / rec.id / "checkpoints")
    registry = get_registry()
    cfg = resolve(rec.config, registry)  # a plugin gone since, or a changed config model: fail before claiming
    if not claimed:
        if rec.status == "FINISHED":
            raise UsageError(f"run {rec.id} already FINISHED; nothing to resume (start a new one with `rlx run`)")
        if rec.status == "RUNNING":
            raise UsageError(f"run {rec.id} is still running (pid {rec.pid} on {rec.host}); stop it before resuming")
        if ckpt is None:
            every = rec.config.get("run", {}).get("checkpoint_every")
            raise UsageError(f"run {rec.id} has no checkpoint to resume from (it stopped before its first one, "
                             f"run.checkpoint_every={every}); start it again with: {rec.command}")
        processes, accel = rec.num_processes or 1, rec.accelerate_config or ""
        if accel and not Path(accel).is_file():
            raise UsageError(f"run {rec.id} was launched with --accelerate-config {accel}, which no longer "
                             "exists; restore that file to resume it")
        if not catalog.claim(rec.id):
            now = catalog.get_run(rec.id)
            raise UsageError(f"run {rec.id} is {now.status} now (pid {now.pid} on {now.host}): another "
                             "`rlx runs resume` took it first")
        if processes > 1 or accel:
            typer.echo(f"resuming run {rec.id} from {ckpt.name} in {processes} processes", err=True)
            flags = ["--no-progress"] * no_progress + ["--debug"] * debug
            code = 1
            try:
                code = launch.launch(["runs", "resume", rec.id, *flags], processes,
                                     Path(accel) if accel else None, {"RLX_RESUME_CLAIMED": rec.id})
            finally:  # the ranks never took it over (they failed to start): not left RUNNING
                catalog.end_if_owned(rec.id, os.getpid(), "FAILED",
                                     f"the {processes}-process resume did not start (exit {code}); "
                                     f"`rlx runs resume {rec.id}` tries again")
            raise typer.Exit(code)
        typer.echo(f"resuming run {rec.id} from {ckpt.name}", err=True)
    result = train(cfg, registry, catalog=catalog, progress=not no_progress,
                   resume=Resume(rec.id, rec.mlflow_run_id, rec.tracking_uri))
    from rlx.cli.output import ended

    typer.echo(ended(result, "(resumed)"))
