"""``rlx run``: compose plugins into one tracked run."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer


def run(
    objective: Optional[str] = typer.Option(None, "--objective", "-o", help="Algorithm (see `rlx plugins list`)."),
    reward: Optional[List[str]] = typer.Option(None, "--reward", "-r", help="Reward source; repeat to combine."),
    env: Optional[str] = typer.Option(None, "--env", "-e", help="Environment."),
    policy: Optional[str] = typer.Option(None, "--policy", "-p", help="Policy."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for every RNG."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps."),
    experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name (default: rlx/<task>)."),
    register: Optional[str] = typer.Option(None, "--register",
                                           help="Register the trained policy in the MLflow model registry as NAME."),
    no_system_metrics: bool = typer.Option(False, "--no-system-metrics",
                                           help="Do not record CPU/memory/GPU use (MLflow's system metrics)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML file with any of the sections."),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-s", help="Override: dotted.key=value (repeatable)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda."),
    precision: Optional[str] = typer.Option(None, "--precision",
                                            help="auto | fp32 | bf16 | fp16 (run.precision; auto: bf16 where it is fast)."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store (default: RLX_HOME/mlflow.db)."),
    no_tracking: bool = typer.Option(False, "--no-tracking",
                                     help="Log nothing to MLflow (the run is still checkpointed, saved and cataloged)."),
    num_processes: int = typer.Option(1, "--num-processes", min=1,
                                      help="Run under accelerate launch with N processes (CPU: gloo)."),
    accelerate_config: Optional[Path] = typer.Option(None, "--accelerate-config",
                                                     help="An accelerate config file (FSDP, DeepSpeed, ...)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train: compose an objective, rewards, an environment and a policy into one tracked run.
    Parts left unnamed are chosen by the registrations: the environment's kind names its
    default objective and policy (`rlx plugins show KIND`)."""
    import json
    import os

    from rlx import home
    from rlx.config import compose, resolve
    from rlx.registry import get_registry

    if no_tracking:
        if tracking_uri is not None:
            from rlx.errors import UsageError

            raise UsageError("--no-tracking and --tracking-uri exclude each other; drop one")
        os.environ["RLX_TRACKING"] = "off"  # read by rlx.tracking; inherited by launched processes
    registry = get_registry()
    flags = {"objective": objective, "reward": reward, "env": env, "policy": policy, "seed": seed,
             "steps": steps, "experiment": experiment, "device": device, "precision": precision,
             "register_as": register,
             "system_metrics": False if no_system_metrics else None}
    raw = compose(config, flags, set_)
    cfg = resolve(raw, registry)
    if dry_run:
        typer.echo(json.dumps(cfg.to_dict(), indent=2))
        return
    from rlx.cli import launch

    if (num_processes > 1 or accelerate_config is not None) and not launch.is_child():
        code = launch.launch(["run", *launch.ARGV[1:]], num_processes, accelerate_config)
        raise typer.Exit(code)
    if os.environ.get("RANK", "0") == "0":  # only rank 0 tracks
        from rlx.tracking import prewarm

        prewarm(home.tracking_uri(tracking_uri))  # MLflow's writer starts while torch is imported
    from rlx.loop import train
    from rlx.registry.catalog import Catalog

    catalog = Catalog(home.catalog_url())
    result = train(cfg, registry, catalog=catalog, tracking_uri=tracking_uri, progress=not no_progress,
                   command="rlx " + " ".join(shlex.quote(a) for a in launch.ARGV))
    from rlx.distributed import rank_world

    if rank_world()[0] != 0:  # rank 0 reports
        return
    tracked = bool(result.mlflow_run_id)
    from rlx.cli.output import ended

    typer.echo(ended(result))
    if result.stopped_by:
        typer.echo(f"  stopped early by plugin '{result.stopped_by}' after step {result.stopped_at_step} "
                   f"of {result.steps}")
    if tracked:
        from rlx.cli.ui_cmd import ui_root
        from rlx.mlflow_views import run_page_url

        uri = home.tracking_uri(tracking_uri)
        root, serving = ui_root(uri)
        typer.echo(f"  mlflow run {result.mlflow_run_id} in {uri}")
        typer.echo(f"  {run_page_url(root, result.mlflow_experiment_id, result.mlflow_run_id)}"
                   + ("" if serving else "  (served by `rlx ui`)"))
    else:
        typer.echo("  tracking off (--no-tracking / RLX_TRACKING=off): nothing logged to MLflow")
    if result.policy_dir:
        what = "reward model" if result.produces == "reward_model" else "policy"
        typer.echo(f"  {what} saved to {result.policy_dir}")
