"""Sweep throughput: the same sweep with ``--max-parallel 1`` and ``2``, against the peer a
user has without ``rlx sweep``, a shell loop of ``rlx run`` one after the other.

Each variant runs in a fresh RLX_HOME: one cell of GRPO on the ``tiny`` policy (or PPO on
CartPole with ``--case control``) over ``--runs`` seeds, each run ``--steps`` steps. Reported:

* wall time and runs per minute of each variant, and the ratios: parallel 2 over parallel 1
  (what a second core buys), and sweep at parallel 1 over the loop (what the controller
  costs: parent run, catalog, polling; close to 1 is the goal);
* the per-run launch overhead: seconds from the controller handing a run to the launcher
  to that run's first trained step (interpreter, imports, building the parts, opening the
  stores), the median over the runs, from ``rlx sweep --json`` (``launch_s``).

    python benchmarks/sweep_throughput.py                 # 6 runs x 20 steps, text
    python benchmarks/sweep_throughput.py --case control --runs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLEAN = ("RLX_DISABLE_PLUGINS", "MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_DEBUG", "RLX_TRACKING")
CASES = {
    "text": ["--objective", "grpo", "--set", "run.batch_size=4", "--set", "objective.num_generations=4",
             "--set", "generation.max_new_tokens=24", "--set", "env.eval_size=32"],
    "control": ["--env", "gym", "--objective", "ppo"],
}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env["RLX_HOME"] = str(home)
    return env


def _rlx(args: list[str], home: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rlx.cli.main", *args], capture_output=True, text=True,
                          env=_env(home), cwd=home)
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed ({proc.returncode}): rlx {' '.join(args)}\n{proc.stderr[-2000:]}")
    return proc


def run_flags(case: str, steps: int) -> list[str]:
    # one thread per run in every variant: the runs do the same work whatever runs beside them
    return [*CASES[case], "--steps", str(steps), "--set", "run.threads=1", "--set", "run.eval_every=0",
            "--set", "run.checkpoint_every=0"]


def sweep(case: str, runs: int, steps: int, parallel: int, root: Path) -> dict:
    home = root / f"sweep{parallel}"
    home.mkdir()
    t0 = time.perf_counter()
    proc = _rlx(["sweep", "--seeds", str(runs), "--max-parallel", str(parallel), "--no-live", "--json", "--name",
                 f"bench-p{parallel}", "--", *run_flags(case, steps)], home)
    wall = time.perf_counter() - t0
    out = json.loads(proc.stdout)
    launch = [r["launch_s"] for r in out["runs"] if r["launch_s"] is not None]
    return {"wall": wall, "launch": statistics.median(launch) if launch else float("nan"),
            "finished": sum(r["status"] == "FINISHED" for r in out["runs"])}


def loop(case: str, runs: int, steps: int, root: Path) -> dict:
    home = root / "loop"
    home.mkdir()
    t0 = time.perf_counter()
    for seed in range(runs):
        _rlx(["run", *run_flags(case, steps), "--seed", str(seed), "--no-progress"], home)
    return {"wall": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), default="text")
    ap.add_argument("--runs", type=int, default=6, help="Seeds of the one cell (runs per variant).")
    ap.add_argument("--steps", type=int, default=20, help="Training steps per run.")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"sweep throughput: {args.runs} runs x {args.steps} steps ({args.case}), {cores} cores, "
          "one torch thread per run")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        peer = loop(args.case, args.runs, args.steps, root)
        p1 = sweep(args.case, args.runs, args.steps, 1, root)
        p2 = sweep(args.case, args.runs, args.steps, 2, root)
    for name, r in (("shell loop of rlx run", peer), ("rlx sweep --max-parallel 1", p1),
                    ("rlx sweep --max-parallel 2", p2)):
        extra = f", launch to first step {r['launch']:.2f} s (median)" if "launch" in r else ""
        print(f"{name}: {r['wall']:.1f} s, {60 * args.runs / r['wall']:.2f} runs/min{extra}")
    print(f"ratio parallel 2 / parallel 1 (throughput): {p1['wall'] / p2['wall']:.2f}x")
    print(f"ratio sweep parallel 1 / shell loop (throughput): {peer['wall'] / p1['wall']:.2f}x")
    if p1["finished"] != args.runs or p2["finished"] != args.runs:
        sys.exit(f"not every run finished: {p1['finished']} and {p2['finished']} of {args.runs}")


if __name__ == "__main__":
    main()
