"""``rlx compare``: how the groups of a sweep (or of any MLflow runs) compare, with the
uncertainty of a few seeds stated: IQM with confidence intervals, probability of
improvement per pair and a verdict that says when the seeds cannot tell.

    rlx compare SWEEP_ID [--metric KEY] [--aggregate final|best|last] [--no-log]
    rlx compare --experiment NAME [--filter "params.objective.beta = '0.04'"]

Everything heavy (mlflow, scipy, matplotlib) is imported inside the command: the CLI
imports this module at startup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def compare(sweep_id: Optional[str] = typer.Argument(None, metavar="SWEEP_ID", help="The sweep to compare "
                                                     "(`rlx sweep list`); a unique prefix is enough."),
            experiment: Optional[str] = typer.Option(None, "--experiment", help="Compare runs of this MLflow "
                                                     "experiment instead of a sweep."),
            filter_string: Optional[str] = typer.Option(None, "--filter", help="With --experiment: an MLflow search "
                                                        "filter, e.g. \"params.objective.beta = '0.04'\"."),
            metric: Optional[str] = typer.Option(None, "--metric", help="The metric to compare (default: the sweep's "
                                                 "metric, else the runs' first headline metric)."),
            aggregate: Optional[str] = typer.Option(None, "--aggregate", help="One score per run: final (last "
                                                    "logged value), best (max; min with --lower-is-better) or last "
                                                    "(mean of the last --last-k values). Default: the sweep's, "
                                                    "else final."),
            last_k: int = typer.Option(3, "--last-k", help="Values averaged by --aggregate last."),
            lower_is_better: bool = typer.Option(False, "--lower-is-better", help="Smaller values of the metric "
                                                 "are better (a loss, a length)."),
            reps: int = typer.Option(2000, "--reps", help="Bootstrap resamples behind each confidence interval."),
            confidence: float = typer.Option(0.95, "--confidence", help="Coverage of the confidence intervals."),
            seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap (same seed, same intervals)."),
            as_json: bool = typer.Option(False, "--json", help="The whole comparison as JSON on stdout."),
            csv: Optional[str] = typer.Option(None, "--csv", help="Write the groups table as CSV to this file "
                                              "(- for stdout)."),
            no_log: bool = typer.Option(False, "--no-log", help="Do not put the tables and plots on the sweep's "
                                        "parent MLflow run."),
            tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="The MLflow store (default: "
                                                       "the sweep's; else MLFLOW_TRACKING_URI or RLX_HOME's)."),
            debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """Compare the groups of a sweep (cells over seeds) or of MLflow runs: IQM and mean
    with bootstrap confidence intervals, the probability that one group beats another,
    and a verdict per pair. With a sweep, the tables and plots also go on its parent
    MLflow run (`compare/`)."""
    from rlx.compare import CompareOptions
    from rlx.errors import UsageError

    if sweep_id is not None and experiment is not None:
        raise UsageError("give a sweep id or --experiment, not both: `rlx compare SWEEP_ID` compares a sweep, "
                         "`rlx compare --experiment NAME [--filter ...]` any runs")
    if sweep_id is None and experiment is None:
        raise UsageError("nothing to compare: give a sweep id (`rlx sweep list`) or --experiment NAME "
                         "[--filter \"...\"]")
    if filter_string is not None and experiment is None:
        raise UsageError("--filter selects runs of an --experiment; a sweep's runs are its own (drop --filter, "
                         "or use --experiment with it)")
    if as_json and csv == "-":
        raise UsageError("--json and --csv - both write to stdout; give --csv a file path, or drop one")
    csv_path = _csv_path(csv)
    options = CompareOptions(metric=metric, aggregate=aggregate or "final", last_k=last_k,
                             lower_is_better=lower_is_better, reps=reps, confidence=confidence, seed=seed)
    options.check()  # before any store is opened
    if sweep_id is not None:
        comparison, target = sweep_comparison(sweep_id, options, aggregate, tracking_uri)
    else:
        comparison, target = _experiment(str(experiment), filter_string or "", options, tracking_uri)
    _output(comparison, as_json, csv, csv_path)
    if target is not None and not no_log:
        from rlx.compare import log_comparison

        uri, parent = target
        log_comparison(uri, parent, comparison)
        typer.echo(f"logged to the sweep's parent MLflow run {parent} (artifacts compare/: tables and plots)", err=True)


def _csv_path(csv: Optional[str]) -> Optional[Path]:
    """The file --csv names, checked before anything is computed or written."""
    from rlx.errors import UsageError

    if csv is None or csv == "-":
        return None
    path = Path(csv).expanduser()
    if path.is_dir():
        raise UsageError(f"--csv {csv} is a folder; give a file path such as {path / 'compare.csv'}")
    if not path.parent.is_dir():
        raise UsageError(f"--csv {csv}: folder {path.parent} does not exist; create it or pick another path")
    return path


def sweep_comparison(sweep_id: str, options: Any, aggregate: Optional[str] = None,
                     tracking_uri: Optional[str] = None) -> tuple[Any, tuple[str, str]]:
    """The comparison of a sweep's runs and where to log it (store, parent run); the
    spec's metric and aggregate unless ``options`` / ``aggregate`` say otherwise."""
    from rlx import home
    from rlx.compare import Excluded, compare, sweep_refs
    from rlx.errors import UsageError
    from rlx.registry.catalog import Catalog

    url = home.catalog_url()
    path = home.sqlite_path(url)
    if path is not None and not path.is_file():
        raise UsageError(f"no sweep '{sweep_id}': there is no catalog at {path} yet (is RLX_HOME right?); "
                         "list sweeps with `rlx sweep list`")
    rec = Catalog(url).get_sweep(sweep_id)
    if not rec.mlflow_run_id:
        raise UsageError(f"sweep {rec.id} ran with tracking off: its runs are not in MLflow, so there is nothing "
                         "to compare; rerun the sweep without --no-tracking")
    spec = rec.spec
    if options.metric is None and spec.get("metric"):
        options.metric = spec["metric"]
    if aggregate is None and spec.get("aggregate"):
        options.aggregate = spec["aggregate"]
        options.check()
    uri = tracking_uri or rec.tracking_uri
    plan = rec.plan
    ids = [str(p["run_id"]) for p in plan]
    refs = sweep_refs(uri, rec.mlflow_run_id, ids)
    if not refs:
        raise UsageError(f"sweep {rec.id} has no runs in MLflow yet ({len(plan)} planned, status {rec.status}); "
                         f"wait for them, or `rlx sweep resume {rec.id}`")
    comparison = compare(uri, refs, options)
    started = {s["run_id"] for g in comparison.groups for s in g.scores} | {e.run_id for e in comparison.excluded}
    for p in plan:
        if str(p["run_id"]) not in started:
            comparison.excluded.append(Excluded(str(p["run_id"]), "", str(p.get("cell", "")), int(p.get("seed", -1)),
                                                "", "no MLflow run: it has not started"))
    return comparison, (uri, rec.mlflow_run_id)


def _experiment(experiment: str, filter_string: str, options: Any,
                tracking_uri: Optional[str]) -> tuple[Any, None]:
    from rlx import home
    from rlx.compare import compare, filter_refs

    uri = home.tracking_uri(tracking_uri)
    return compare(uri, filter_refs(uri, experiment, filter_string), options), None


def _output(comparison: Any, as_json: bool, csv: Optional[str], csv_path: Optional[Path]) -> None:
    if csv_path is not None:
        csv_path.write_text(comparison.to_csv())
    if as_json:
        typer.echo(comparison.to_json())
    elif csv == "-":
        typer.echo(comparison.to_csv(), nl=False)
    else:
        from rlx.cli.output import console

        comparison.render(console())
    if csv_path is not None:
        typer.echo(f"wrote {csv_path}", err=True)
