"""``rlx sweep``: many runs over cells and seeds, as one tracked experiment.

    rlx sweep SPEC.toml [--launcher NAME] [--max-parallel N] [--set launcher.KEY=VALUE]
    rlx sweep --objective grpo,rloo --seeds 0-4 --grid objective.beta=0,0.04 -- <rlx run flags>
    rlx sweep resume ID [--retry-failed]
    rlx sweep list | show ID
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

_ACTIONS = ("resume", "list", "show")
# rlx run flags that a sweep decides for every run, with what to use instead
_NOT_IN_SWEEP = {"seed": "seeds are the sweep's: use --seeds",
                 "num_processes": "a sweep's runs are one process each",
                 "accelerate_config": "a sweep's runs are one process each",
                 "dry_run": "use rlx sweep --dry-run",
                 "tracking_uri": "pass --tracking-uri to rlx sweep itself",
                 "no_tracking": "pass --no-tracking to rlx sweep itself",
                 "experiment": "pass --experiment to rlx sweep itself"}


def sweep(
    args: Optional[List[str]] = typer.Argument(None, metavar="[SPEC.toml | resume ID | list | show ID] [-- RUN FLAGS]",
                                               help="A sweep spec file; or resume/show a sweep by id; or list sweeps."),
    objective: Optional[str] = typer.Option(None, "--objective", "-o", help="Objectives, comma-separated: an axis."),
    reward: Optional[str] = typer.Option(None, "--reward", "-r", help="Reward sources, comma-separated: an axis "
                                                                      "(one reward each)."),
    env: Optional[str] = typer.Option(None, "--env", "-e", help="Environments, comma-separated: an axis."),
    policy: Optional[str] = typer.Option(None, "--policy", "-p", help="Policies, comma-separated: an axis."),
    grid: Optional[List[str]] = typer.Option(None, "--grid", "-g", help="An axis: dotted.key=v1,v2 (repeatable)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Seeds of every cell: a count (5: 0-4), a range "
                                                             "(0-4) or a list (0,3,7). Default: the spec's, else 1."),
    name: Optional[str] = typer.Option(None, "--name", help="The sweep's name (default: the spec file's)."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment of the sweep and its runs."),
    launcher: Optional[str] = typer.Option(None, "--launcher", help="Where runs go: local (default), ray, ... "
                                                                    "(`rlx plugins list`)."),
    max_parallel: Optional[int] = typer.Option(None, "--max-parallel", min=1,
                                               help="Runs at once (local default: the cores, or one per GPU)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-s", help="launcher.KEY=VALUE for the launcher, any "
                                                                       "other dotted.key=value for every run."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="resume: rerun FAILED runs too."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store (default: RLX_HOME/mlflow.db)."),
    no_tracking: bool = typer.Option(False, "--no-tracking", help="Log nothing to MLflow (no parent run, no compare)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan; start nothing."),
    no_live: bool = typer.Option(False, "--no-live", help="A line per run instead of the live table."),
    as_json: bool = typer.Option(False, "--json", help="list/show/the final summary as JSON."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Run a sweep: every cell of a spec x every seed, each an ordinary tracked run, nested
    under one MLflow parent run; then compare the cells (IQM, bootstrap CIs, probability of
    improvement). `rlx sweep resume ID` continues one that stopped."""
    import os

    from rlx.cli import gcpause, launch
    from rlx.errors import UsageError

    given = list(args or [])
    raw = launch.ARGV[1:] if launch.ARGV and launch.ARGV[0] == "sweep" else given
    run_flags = raw[raw.index("--") + 1:] if "--" in raw else []
    positional = given[:len(given) - len(run_flags)] if run_flags else given
    head = positional[0] if positional else None
    if head in _ACTIONS:
        if head == "list":
            _reject_extra(positional[1:], "rlx sweep list")
            return _list(as_json)
        if len(positional) != 2:
            raise UsageError(f"rlx sweep {head} takes one sweep id: rlx sweep {head} ID (ids: `rlx sweep list`)")
        if head == "show":
            return _show(positional[1], as_json)
    elif len(positional) > 1:
        raise UsageError(f"rlx sweep takes one spec file, got {len(positional)} arguments ({' '.join(positional)}); "
                         "put rlx run flags after --")
    if no_tracking:
        if tracking_uri is not None:
            raise UsageError("--no-tracking and --tracking-uri exclude each other; drop one")
        os.environ["RLX_TRACKING"] = "off"
    gcpause.resume()  # a long-running command
    from rlx.registry import get_registry

    launcher_sets = [s[len("launcher."):] for s in set_ or [] if s.startswith("launcher.")]
    run_sets = [s for s in set_ or [] if not s.startswith("launcher.")]
    launcher_settings = _launcher_settings(launcher_sets)
    registry = get_registry()
    from rlx import home
    from rlx.registry.catalog import Catalog

    if head == "resume":
        _only_for_new({"objective": objective, "reward": reward, "env": env, "policy": policy, "grid": grid,
                       "seeds": seeds, "name": name, "experiment": experiment, "dry_run": dry_run}, "rlx sweep resume")
        if run_flags or run_sets or tracking_uri:
            raise UsageError("rlx sweep resume continues the runs as they were configured; drop the run flags, "
                             "--set of run settings and --tracking-uri")
        from rlx.sweep import resume

        outcome = resume(positional[1], registry, Catalog(home.catalog_url()), retry_failed=retry_failed,
                         live=not no_live, launcher_name=launcher, launcher_settings=launcher_settings,
                         max_parallel=max_parallel)
        return _report(outcome, None, as_json)
    if retry_failed:
        raise UsageError("--retry-failed is for rlx sweep resume ID")
    spec = _spec(head, run_flags, run_sets, {"objective": objective, "reward": reward, "env": env, "policy": policy},
                 grid or [], seeds, name, experiment)
    if dry_run:
        return _dry_run(spec, registry, launcher, launcher_settings, max_parallel, as_json)
    from rlx.sweep import start

    outcome = start(spec, registry, Catalog(home.catalog_url()), tracking_uri=tracking_uri, live=not no_live,
                    launcher_name=launcher, launcher_settings=launcher_settings, max_parallel=max_parallel)
    return _report(outcome, spec, as_json)


def _reject_extra(extra: list[str], command: str) -> None:
    if extra:
        from rlx.errors import UsageError

        raise UsageError(f"{command} takes no arguments, got '{extra[0]}'")


def _only_for_new(values: dict[str, Any], command: str) -> None:
    from rlx.errors import UsageError

    for n in values:
        if values[n]:
            raise UsageError(f"--{n.replace('_', '-')} shapes a new sweep; {command} continues the one recorded "
                             "(drop it, or start a new sweep)")


def _launcher_settings(items: list[str]) -> dict[str, Any]:
    from rlx.config import parse_set

    out: dict[str, Any] = {}
    for item in items:
        parsed = parse_set(item)
        key = next(iter(parsed))
        if isinstance(parsed[key], dict):
            from rlx.errors import UsageError

            raise UsageError(f"--set launcher.{item}: launcher settings are one level deep (launcher.KEY=VALUE)")
        out.update(parsed)
    return out


def _run_flags(flags: list[str]) -> dict[str, Any]:
    """``rlx run``'s own options, parsed by its own parser: the same names and checks."""
    import click

    from rlx.cli import run_cmd
    from rlx.errors import UsageError

    app = typer.Typer()
    app.command()(run_cmd.run)
    command = typer.main.get_command(app)
    try:
        ctx = command.make_context("rlx run", list(flags))
    except click.exceptions.ClickException as exc:
        raise UsageError(f"run flags after --: {' '.join(exc.format_message().split())}") from None
    params = ctx.params
    for key, why in _NOT_IN_SWEEP.items():
        if params.get(key) not in (None, False, 1) or (key == "num_processes" and params.get(key, 1) != 1):
            raise UsageError(f"run flag --{key.replace('_', '-')} does not apply to a sweep: {why}")
    return params


def _spec(head: str | None, run_flags: list[str], run_sets: list[str], choices: dict[str, str | None],
          grid: list[str], seeds: str | None, name: str | None, experiment: str | None) -> Any:
    from rlx.config import apply_flags, compose
    from rlx.errors import UsageError
    from rlx.sweep_spec import from_flags, load_spec, parse_seeds

    params = _run_flags(run_flags) if run_flags else {}
    flags = {k: params.get(k) for k in ("objective", "reward", "env", "policy", "steps", "device", "precision")}
    flags.update(register_as=params.get("register"), system_metrics=False if params.get("no_system_metrics") else None)
    sets = [*(params.get("set_") or []), *run_sets]
    if head is not None:
        if any(choices.values()) or grid:
            raise UsageError("a spec file and axis flags (--objective/--reward/--env/--policy/--grid) exclude each "
                             "other; put the axes in the spec's [axes] table")
        if params.get("config"):
            raise UsageError("run flag --config with a spec file: name the file in the spec (base = \"FILE\")")
        spec = load_spec(Path(head))
        spec.base = apply_flags(spec.base, flags, sets)
        if seeds is not None:
            spec.seeds = parse_seeds(seeds, "--seeds")
        if name:
            spec.name = name
        if experiment:
            spec.experiment = experiment
        return spec
    if not (any(choices.values()) or grid or run_flags or seeds):
        raise UsageError("nothing to sweep: give a spec file (rlx sweep SPEC.toml) or axes "
                         "(--objective a,b / --grid key=v1,v2) and --seeds")
    base = compose(params.get("config"), flags, sets)
    return from_flags(name, base, choices, grid, seeds, experiment)


def _dry_run(spec: Any, registry: Any, launcher: str | None, settings: dict[str, Any], max_parallel: int | None,
             as_json: bool) -> None:
    import json

    from rlx.sweep import launcher_for, new_id
    from rlx.sweep_spec import expand

    plan = expand(spec, registry, new_id)
    name, _ = launcher_for(registry, launcher or spec.launcher, {**spec.launcher_settings, **settings})
    if as_json:
        typer.echo(json.dumps({"name": spec.name, "launcher": name, "seeds": spec.seeds,
                               "cells": [c.label for c in spec.cells],
                               "runs": [{"cell": p.cell, "seed": p.seed, "config": p.config} for p in plan]}, indent=2))
        return
    typer.echo(f"sweep {spec.name}: {len(plan)} runs = {len(spec.cells)} cells x {len(spec.seeds)} seeds "
               f"({', '.join(map(str, spec.seeds))}) on launcher '{name}'"
               + (f", {max_parallel or spec.max_parallel} at once" if (max_parallel or spec.max_parallel) else ""))
    for cell in spec.cells:
        typer.echo(f"  {cell.label}")
    typer.echo("every cell validated; nothing started (drop --dry-run to run)")


def _report(outcome: Any, spec: Any, as_json: bool) -> None:
    import json

    from rlx.sweep import summary_of

    comparison = _compare_at_end(outcome)
    rows = [{"run_id": s.planned.run_id, "cell": s.planned.cell, "seed": s.planned.seed, "status": s.status,
             "error": s.error, "metrics": s.progress.get("metrics", {}),
             "seconds": round(s.ended - s.started, 2) if s.ended and s.started else None,
             "launch_s": round(s.launch_s, 2) if s.launch_s is not None else None, "where": s.where}
            for s in outcome.runs]
    if as_json:
        typer.echo(json.dumps({"sweep_id": outcome.sweep_id, "status": outcome.status,
                               "parent_run_id": outcome.parent_run_id, "seconds": round(outcome.seconds, 1),
                               "runs": rows, "comparison": comparison.to_dict() if comparison else None}, indent=2))
    else:
        if comparison is not None:
            from rlx.cli.output import console

            comparison.render(console())
        typer.echo(f"sweep {outcome.sweep_id} {outcome.status} in {outcome.seconds:.0f} s: {summary_of(outcome.runs)}")
        for s in outcome.runs:
            if s.status != "FINISHED":
                log = f" (log: {_log_path(outcome.sweep_id, s.planned.run_id)})" if s.status != "PENDING" else ""
                typer.echo(f"  {s.planned.run_id} {s.planned.label}: {s.status}"
                           + (f": {s.error}" if s.error else "") + log)
        if outcome.parent_run_id:
            typer.echo(f"  parent mlflow run {outcome.parent_run_id} in {outcome.tracking_uri}"
                       + (" (with the comparison's tables and plots under compare/)" if comparison else ""))
        if outcome.status != "FINISHED":
            typer.echo(f"  continue with: rlx sweep resume {outcome.sweep_id}"
                       + (" --retry-failed" if any(s.status == "FAILED" for s in outcome.runs) else ""))
    if outcome.status == "KILLED":
        raise typer.Exit(130)
    if outcome.status != "FINISHED":
        raise typer.Exit(1)


def _compare_at_end(outcome: Any) -> Any:
    """The comparison of the sweep's finished runs (the spec's metric), logged on its
    parent run; None without tracking or finished runs. A comparison that cannot be made
    (no metric in common, ...) is a warning: the runs themselves are done and recorded."""
    if not outcome.parent_run_id or outcome.count("FINISHED") == 0:
        return None
    from rlx.errors import RlxError

    try:
        from rlx.cli.compare_cmd import sweep_comparison
        from rlx.compare import CompareOptions, log_comparison

        comparison, (uri, parent) = sweep_comparison(outcome.sweep_id, CompareOptions())
        log_comparison(uri, parent, comparison)
        return comparison
    except RlxError as exc:
        typer.echo(f"warning: no comparison of sweep {outcome.sweep_id}: {exc}", err=True)
        return None


def _log_path(sweep_id: str, run_id: str) -> Path:
    from rlx.sweep import sweep_dir

    return sweep_dir(sweep_id) / "logs" / f"{run_id}.log"


def _list(as_json: bool) -> None:
    import json

    from rlx import home
    from rlx.registry.catalog import Catalog

    rows = Catalog(home.catalog_url()).list_sweeps()
    data = [{"id": r.id, "name": r.name, "status": r.status, "runs": len(r.plan), "launcher": r.launcher,
             "summary": r.summary, "experiment": r.experiment, "mlflow_run_id": r.mlflow_run_id,
             "created_at": r.created_at.isoformat(timespec="seconds")} for r in rows]
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    from rlx.cli.output import console
    from rlx.cli.runs_cmd import _text

    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    for col in ("id", "name", "status", "runs", "launcher", "summary", "created"):
        table.add_column(col, no_wrap=col in ("id", "status", "runs"))
    for d in data:
        table.add_row(*map(_text, (d["id"], d["name"], d["status"], d["runs"], d["launcher"], d["summary"] or "-",
                                   d["created_at"][5:16].replace("T", " "))))
    console().print(table)


def _show(sweep_id: str, as_json: bool) -> None:
    import json

    from rlx import home
    from rlx.registry.catalog import Catalog

    catalog = Catalog(home.catalog_url())
    rec = catalog.get_sweep(sweep_id)
    runs = catalog.runs_of([p["run_id"] for p in rec.plan])
    plan = [{**p, "status": runs[p["run_id"]].status if p["run_id"] in runs else "FAILED" if p.get("failed") else "PENDING",
             "metrics": {k: v for k, v in runs[p["run_id"]].metrics.items()
                         if k in (runs[p["run_id"]].headline or "").split(",")} if p["run_id"] in runs else {}}
            for p in rec.plan]
    data = {"id": rec.id, "name": rec.name, "status": rec.status, "summary": rec.summary, "launcher": rec.launcher,
            "experiment": rec.experiment, "tracking_uri": rec.tracking_uri, "mlflow_run_id": rec.mlflow_run_id,
            "host": rec.host, "pid": rec.pid, "runs": plan}
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rlx.cli.output import console
    from rlx.cli.runs_cmd import _text

    c = console()
    c.print(f"[bold]sweep {_text(rec.id)}[/bold]  {_text(rec.name)}  [bold]{_text(rec.status)}[/bold]  "
            f"{_text(rec.summary)}")
    for k in ("launcher", "experiment", "mlflow_run_id", "tracking_uri"):
        if data[k]:
            c.print(f"  {k:14} {_text(data[k])}")
    for p in plan:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in p["metrics"].items())
        c.print(f"  {p['run_id']}  {_text(p['cell'])} s{p['seed']}  {p['status']}  {_text(shown)}")
