"""``rlx runs list|show`` over the catalog, and ``rlx ui`` (the MLflow UI on the same store)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Optional

import typer

app = typer.Typer(help="Runs recorded in the catalog.", no_args_is_help=True)
KEY_METRICS = ("eval/accuracy", "eval/preference_accuracy", "eval/step_agreement", "reward/mean", "kl/ref",
               "loss/policy", "loss/sft")
# the accuracy column: a policy's, else a reward model's on held-out pairs or steps
ACCURACY = ("eval/accuracy", "eval/preference_accuracy", "eval/step_agreement")


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


def _row(r) -> dict:
    return {"id": r.id, "name": r.name, "status": r.status, "objective": r.objective, "rewards": r.rewards,
            "env": r.env, "policy": r.policy, "seed": r.seed, "experiment": r.experiment,
            "mlflow_run_id": r.mlflow_run_id, "tracking_uri": r.tracking_uri, "checkpoint": r.checkpoint,
            "policy_dir": r.policy_dir, "host": r.host, "pid": r.pid,
            "created_at": r.created_at.isoformat(timespec="seconds"),
            "ended_at": r.ended_at.isoformat(timespec="seconds") if r.ended_at else None,
            "metrics": r.metrics, "error": r.error, "command": r.command}


@app.command("list")
def list_(objective: Optional[str] = typer.Option(None, help="Only runs of this objective."),
          reward: Optional[str] = typer.Option(None, help="Only runs using this reward source."),
          env: Optional[str] = typer.Option(None, help="Only runs on this environment."),
          status: Optional[str] = typer.Option(None, help="RUNNING | FINISHED | FAILED | KILLED."),
          limit: int = typer.Option(50, help="At most this many runs, newest first."),
          as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Recent runs, newest first."""
    rows = [_row(r) for r in _list_runs(objective=objective, reward=reward, env=env, status=status, limit=limit)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from rlx.cli.output import console

    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    table.add_column("id", no_wrap=True, min_width=12)
    for col in ("status", "objective", "rewards", "env", "policy", "seed", "accuracy"):
        table.add_column(col, no_wrap=col in ("status", "seed", "accuracy"))
    table.add_column("created", no_wrap=True)
    for r in rows:
        acc = next((r["metrics"][k] for k in ACCURACY if k in r["metrics"]), None)
        table.add_row(r["id"], r["status"], r["objective"], r["rewards"], r["env"], r["policy"], str(r["seed"]),
                      f"{acc:.3f}" if acc is not None else "-", r["created_at"][5:16].replace("T", " "))
    console().print(table)


@app.command("show")
def show(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Config, status, MLflow run id, checkpoint path and key metrics of one run."""
    rec = _get_run(run_id)
    row = _row(rec)
    row["config"] = rec.config
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    from rlx.cli.output import console

    c = console()
    c.print(f"[bold]run {row['id']}[/bold]  {row['name']}  [bold]{row['status']}[/bold]")
    for k in ("objective", "rewards", "env", "policy", "seed", "experiment", "mlflow_run_id", "tracking_uri",
              "checkpoint", "policy_dir", "host", "pid", "created_at", "ended_at", "command", "error"):
        if row[k] not in (None, ""):
            c.print(f"  {k:14} {row[k]}")
    metrics = {k: v for k, v in row["metrics"].items() if k in KEY_METRICS}
    if metrics:
        c.print("  metrics        " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    c.print("  config")
    c.print_json(json.dumps(row["config"]))


@app.command("resume")
def resume(run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
           no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
           debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """Continue a crashed, killed or failed run from its newest checkpoint, in the same MLflow run."""
    from rlx.cli import gcpause

    gcpause.resume()  # a long-running command: collect garbage again
    from rlx import checkpoint, home
    from rlx.config import resolve
    from rlx.errors import UsageError
    from rlx.loop import Resume, train
    from rlx.registry import get_registry

    catalog = _catalog()
    rec = catalog.get_run(run_id)
    if rec.status == "FINISHED":
        raise UsageError(f"run {rec.id} already FINISHED; nothing to resume (start a new one with `rlx run`)")
    if rec.status == "RUNNING":
        raise UsageError(f"run {rec.id} is still running (pid {rec.pid} on {rec.host}); stop it before resuming")
    ckpt = checkpoint.latest(home.runs_dir() / rec.id / "checkpoints")
    if ckpt is None:
        every = rec.config.get("run", {}).get("checkpoint_every")
        raise UsageError(f"run {rec.id} has no checkpoint to resume from (it stopped before its first one, "
                         f"run.checkpoint_every={every}); start it again with: {rec.command}")
    registry = get_registry()
    cfg = resolve(rec.config, registry)
    result = train(cfg, registry, catalog=catalog, tracking_uri=rec.tracking_uri, progress=not no_progress,
                   resume=Resume(rec.id, rec.mlflow_run_id, ckpt))
    typer.echo(f"run {result.run_id} {result.status} (resumed from {ckpt.name})")


def ui(port: int = typer.Option(5000, help="Port to serve on."),
       host: str = typer.Option("127.0.0.1", help="Interface; keep 127.0.0.1 unless you mean to share it."),
       tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store to browse.")) -> None:
    """Start the MLflow UI on the rlx store (Ctrl-C to stop)."""
    from rlx import home

    uri = home.tracking_uri(tracking_uri)
    typer.echo(f"MLflow UI for {uri} at http://{host}:{port}  (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd)
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
