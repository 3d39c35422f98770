"""Step time of the same global GRPO batch in 1 process vs N processes (accelerate,
gloo on CPU), measured in one run, alternating.

    python benchmarks/multiprocess_step.py                 # 2 processes, 20 steps each, 2 rounds
    python benchmarks/multiprocess_step.py --steps 3 --rounds 1   # smoke

Each configuration is a real ``rlx run`` (so start-up is excluded: the figure is the
median ``perf/step_s`` of steps 2..N as logged to MLflow).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile


def run(home: str, procs: int, per_process: int, steps: int, tag: str) -> list[float]:
    args = [sys.executable, "-m", "rlx.cli.main", "run", "--objective", "grpo", "--reward", "prm",
            "--steps", str(steps), "--set", f"run.batch_size={per_process}", "--set", "run.eval_every=0",
            "--set", "env.eval_size=8", "--set", "run.checkpoint_every=0", "--set", "run.save_policy=false",
            "--experiment", tag, "--no-progress"]
    if procs > 1:
        args += ["--num-processes", str(procs)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RLX_HOME"] = home
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{tag} failed:\n{proc.stderr[-2000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    exp = client.get_experiment_by_name(tag)
    r = client.search_runs([exp.experiment_id])[0]
    hist = sorted(client.get_metric_history(r.info.run_id, "perf/step_s"), key=lambda m: m.step)
    return [m.value for m in hist[1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--global-prompts", type=int, default=16, help="prompts per step over all processes")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    times: dict[int, list[float]] = {1: [], a.processes: []}
    with tempfile.TemporaryDirectory() as home:
        for r in range(a.rounds):
            for n in (1, a.processes):
                times[n] += run(home, n, a.global_prompts // n, a.steps, f"p{n}-r{r}")
    one, many = statistics.median(times[1]), statistics.median(times[a.processes])
    print(f"GRPO step, {a.global_prompts} prompts x 8 completions per step (global), median of "
          f"{len(times[1])} steps each")
    print(f"  1 process             {one:.3f} s/step")
    print(f"  {a.processes} processes           {many:.3f} s/step")
    print(f"  ratio ({a.processes} / 1)         {many / one:.2f}")


if __name__ == "__main__":
    main()
