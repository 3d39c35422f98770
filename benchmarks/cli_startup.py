"""Wall time of ``rlx --help``, ``rlx plugins list`` and ``rlx runs list`` against ``trl --help``.

Each command runs as a fresh subprocess (the installed console scripts, output to a
pipe), the commands interleaved round by round; the figure is the median of ``--runs``
rounds after one untimed warm-up round (the first call of each is also shown: it fills
rlx's plugin cache under RLX_HOME). ``runs list`` reads a fresh temporary RLX_HOME whose
catalog holds ``--catalog-runs`` runs, written through rlx's own catalog API exactly as
``rlx run`` writes them (``Catalog.add_run`` with the resolved config, then
``update_run`` with the final status and metrics), without training.

    python benchmarks/cli_startup.py              # 10 rounds
    python benchmarks/cli_startup.py --runs 30

Targets (issue 6): ``rlx --help`` no slower than ``trl --help``; ``rlx plugins list`` and
``rlx runs list`` under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

TARGET_S = 0.3
CLEAN = ("RLX_DISABLE_PLUGINS", "MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_DEBUG")


def script(name: str) -> str | None:
    """The console script next to this interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


def populate(home: Path, n: int) -> None:
    """``n`` finished runs in ``home``'s catalog, written the way ``rlx.loop.train`` writes them."""
    os.environ["RLX_HOME"] = str(home)
    from rlx import home as rlx_home
    from rlx.config import compose, resolve
    from rlx.registry import get_registry
    from rlx.registry.catalog import Catalog, RunRecord

    reg = get_registry()
    catalog = Catalog(rlx_home.catalog_url())
    catalog.sync_plugins(reg.rows())
    kinds = [("grpo", ["prm"], "arithmetic"), ("sft", [], "arithmetic"), ("ppo", ["prm"], "arithmetic"),
             ("grpo", ["verifier"], "arithmetic"), ("dpo", [], "preferences")]
    start = datetime.now(timezone.utc) - timedelta(hours=n)
    for i in range(n):
        objective, rewards, env = kinds[i % len(kinds)]
        cfg = resolve(compose(None, {"objective": objective, "reward": rewards, "env": env, "seed": i}), reg)
        names = cfg.names
        run_id = f"{i:04d}" + os.urandom(4).hex()
        created = start + timedelta(hours=i)
        catalog.add_run(RunRecord(id=run_id, name=f"{objective}-{names['reward'] or 'none'}-{env}-s{i}", objective=objective,
                        rewards=names["reward"], env=env, policy=names["policy"], seed=i, experiment="rlx",
                        mlflow_run_id=os.urandom(16).hex(), tracking_uri=rlx_home.tracking_uri(),
                        config_json=json.dumps(cfg.to_dict()),
                        command=f"rlx run --objective {objective} --seed {i}",
                        created_at=created))
        metrics = {"eval/accuracy": 0.6 + i / 100, "reward/mean": 1.5, "kl/ref": 0.05, "perf/step_s": 0.6}
        catalog.update_run(run_id, status="FINISHED", metrics=metrics, ended_at=created + timedelta(minutes=2),
                           policy_dir=str(home / "runs" / run_id / "policy"))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="timed rounds (median over them)")
    ap.add_argument("--catalog-runs", type=int, default=5, help="runs written into the temporary catalog")
    args = ap.parse_args()

    rlx = script("rlx")
    if rlx is None:
        raise SystemExit("the rlx console script is not installed (pip install -e .)")
    trl = script("trl")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        populate(home, args.catalog_runs)
        env = {k: v for k, v in os.environ.items() if k not in CLEAN}
        env["RLX_HOME"] = str(home)
        cmds = {"rlx --help": [rlx, "--help"], "rlx plugins list": [rlx, "plugins", "list"],
                "rlx runs list": [rlx, "runs", "list"]}
        if trl is None:
            print("trl not installed: skipping the trl --help comparison (pip install -e '.[bench]')")
        else:
            cmds["trl --help"] = [trl, "--help"]
        first = {name: timed(cmd, env) for name, cmd in cmds.items()}  # warm-up: caches, page cache
        times: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                times[name].append(timed(cmd, env))

    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{args.runs} rounds, each command a fresh process; RLX_HOME with {args.catalog_runs} runs in its catalog")
    print(f"{'command':18} {'median s':>9} {'min s':>7} {'max s':>7} {'first s':>8}  target")
    for name, v in times.items():
        if name == "rlx --help":
            target = f"<= trl --help ({med['trl --help']:.3f})" if "trl --help" in med else "<= trl --help"
            ok = med[name] <= med["trl --help"] if "trl --help" in med else None
        elif name.startswith("rlx"):
            target, ok = f"< {TARGET_S}", med[name] < TARGET_S
        else:
            target, ok = "", None
        mark = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(f"{name:18} {med[name]:9.3f} {min(v):7.3f} {max(v):7.3f} {first[name]:8.3f}  {target}{mark}")
    if "trl --help" in med:
        print(f"ratio rlx --help / trl --help: {med['rlx --help'] / med['trl --help']:.2f}")


if __name__ == "__main__":
    main()
