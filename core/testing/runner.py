"""``run``: a short ``rlx run`` in this process, against a private RLX_HOME."""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

# small enough that the tiny policy trains two steps in seconds on a CPU
DEFAULTS: dict[str, dict[str, Any]] = {"run": {"batch_size": 2, "eval_every": 0, "device": "cpu"},
                                       "generation": {"max_new_tokens": 16}}
# variables that would send the run's records somewhere other than its RLX_HOME
_ELSEWHERE = ("MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_RUN_ID")


class RunMetrics(dict):
    """The run's final metrics (``RunResult.metrics``), with the whole ``RunResult`` as
    ``.result`` (run id, status, ``policy_dir``, ...)."""

    result: Any = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlx.testing.run", add_help=False, exit_on_error=False)
    for flags, dest in ((("--objective", "-o"), "objective"), (("--env", "-e"), "env"),
                        (("--policy", "-p"), "policy"), (("--experiment",), "experiment"),
                        (("--device",), "device"), (("--config", "-c"), "config")):
        p.add_argument(*flags, dest=dest)
    p.add_argument("--reward", "-r", dest="reward", action="append")
    p.add_argument("--set", "-s", dest="set", action="append", default=[])
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    return p


def _cli(args: tuple[str, ...]) -> argparse.Namespace:
    from rlx.errors import UsageError

    try:
        found, rest = _parser().parse_known_args(list(args))
    except argparse.ArgumentError as exc:
        raise UsageError(f"rlx.testing.run: {exc}") from None
    if rest:
        raise UsageError(f"rlx.testing.run: unsupported argument(s) {' '.join(rest)}; it takes --objective, --env, "
                         "--policy, --reward, --seed, --steps, --experiment, --device, --config and --set")
    return found


def _nested(sets: dict[str, Any]) -> dict[str, Any]:
    """``run__batch_size=4`` -> ``{"run": {"batch_size": 4}}``."""
    out: dict[str, Any] = {}
    for key, value in sets.items():
        *parents, leaf = key.split("__")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


@contextlib.contextmanager
def _environment(home: Path, tracking: bool) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("RLX_HOME", "RLX_TRACKING", *_ELSEWHERE)}
    os.environ["RLX_HOME"] = str(home)
    os.environ["RLX_TRACKING"] = "on" if tracking else "off"
    for k in _ELSEWHERE:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(*cli_args: str, steps: int = 2, home: str | Path | None = None, tracking: bool = False,
        **sets: Any) -> RunMetrics:
    """Train in this process as ``rlx run`` does (``rlx.config.compose`` and ``resolve``,
    then ``rlx.train``) and return the run's final metrics.

    ``cli_args``: ``rlx run``'s component and config flags (``--objective``, ``--env``,
    ``--policy``, ``--reward``, ``--seed``, ``--steps``, ``--experiment``, ``--device``,
    ``--config``, ``--set key=value``). ``sets``: more settings as keywords, a double
    underscore for each dot (``objective__beta=0.1`` is ``--set objective.beta=0.1``),
    applied last. ``steps``: ``run.steps`` unless ``--steps`` is given. Small defaults sit
    under everything: ``run.batch_size=2``, ``run.eval_every=0`` (evaluated before and
    after training only), ``run.device=cpu``, ``generation.max_new_tokens=16``.

    ``home``: the RLX_HOME of the run (catalog, checkpoints, saved policy); default a new
    temporary folder, left in place for the caller to inspect. ``tracking``: log to
    MLflow in ``<home>/mlflow.db`` (slower: MLflow starts); off by default. A run that
    fails raises ``rlx.RlxError`` as ``rlx run`` would report it."""
    from rlx.config import _merge, compose, resolve
    from rlx.loop import train
    from rlx.registry import get_registry
    from rlx.registry.catalog import Catalog

    cli = _cli(cli_args)
    flags = {k: getattr(cli, k) for k in ("objective", "reward", "env", "policy", "seed", "steps", "experiment",
                                          "device")}
    raw = compose(cli.config, flags, cli.set)
    raw = _merge(_merge(DEFAULTS, {"run": {"steps": steps}}), raw)
    raw = _merge(raw, _nested(sets))
    folder = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="rlx-run-"))
    with _environment(folder.resolve(), tracking):
        from rlx import home as rlx_home

        registry = get_registry()
        cfg = resolve(raw, registry)
        catalog = Catalog(rlx_home.catalog_url())
        result = train(cfg, registry, catalog=catalog, progress=False,
                       command="rlx.testing.run " + " ".join(cli_args))
    out = RunMetrics(result.metrics)
    out.result = result
    return out
