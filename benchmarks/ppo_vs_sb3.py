"""rlx ppo against stable-baselines3 PPO on CartPole-v1, same hyperparameters (RL
Baselines3 Zoo's tuned set: 8 envs, n_steps 32, batch 256, 20 epochs, gamma 0.98,
lambda 0.8, lr 1e-3 linear, clip 0.2 linear, no entropy, [64, 64] tanh MLPs), alternating
in one process, same machine. Needs the ``bench`` extra (stable-baselines3).

    python benchmarks/ppo_vs_sb3.py                       # 100k steps, 2 rounds
    python benchmarks/ppo_vs_sb3.py --steps 4096 --rounds 1   # smoke

Reports training environment steps per second (evaluation excluded) and training time
until the deterministic policy first scores >= 475 over 10 episodes (evaluated every
6,400 steps in both), and the rlx / SB3 ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from sb3_timer import solve_timer  # benchmarks/ is on sys.path when a script here runs

EVAL_EVERY_UPDATES = 25  # x 256 env steps = 6,400
EXTRA: list[str] = []  # extra --set overrides for the rlx side (profiling)


def run_sb3(steps: int, seed: int) -> tuple[float, float | None]:
    import numpy as np
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    lin = lambda v: (lambda p: p * v)  # noqa: E731  (SB3 schedules take remaining progress)
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=seed + 10_000)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8,
                learning_rate=lin(1e-3), clip_range=lin(0.2), ent_coef=0.0, seed=seed, device="cpu", verbose=0)
    timer = solve_timer(eval_env, EVAL_EVERY_UPDATES)
    timer.start()
    model.learn(total_timesteps=steps, callback=timer)
    train_s = time.perf_counter() - timer.t0 - timer.paused
    np.random.seed(seed)
    return steps / train_s, timer.solved_at


def run_rlx(steps: int, seed: int) -> tuple[float, float | None]:
    with tempfile.TemporaryDirectory() as home:
        os.environ["RLX_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from mlflow.tracking import MlflowClient

        from rlx.config import compose, resolve
        from rlx.loop import train
        from rlx.registry import get_registry

        reg = get_registry()
        cfg = resolve(compose(None, {"objective": "ppo", "env": "gym", "policy": "mlp", "seed": seed},
                              [f"run.env_steps={steps}", f"run.eval_every={EVAL_EVERY_UPDATES}",
                               "run.save_policy=false", "run.checkpoint_every=0", "env.id=CartPole-v1", *EXTRA]), reg)
        result = train(cfg, reg, progress=False)
        client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
        step_s = {m.step: m.value for m in client.get_metric_history(result.mlflow_run_id, "perf/step_s")}
        evals = sorted((m.step, m.value) for m in client.get_metric_history(result.mlflow_run_id, "eval/return"))
    train_s = sum(step_s.values())
    solved = next((s for s, v in evals if v >= 475 and s > 0), None)
    return len(step_s) * 256 / train_s, (sum(v for s, v in step_s.items() if s <= solved) if solved else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads for both (0: each library's default)")
    a = ap.parse_args()
    import torch

    # each library at its own default unless --threads is given: torch's default for SB3
    # (it leaves threads alone), rlx's ppo default for control (one thread)
    sb3_threads = a.threads or torch.get_num_threads()
    if a.threads:
        EXTRA.append(f"run.threads={a.threads}")
    print(f"torch threads: sb3 {sb3_threads}, rlx {a.threads or 'its default (1 for control)'}", flush=True)
    res: dict[str, list[tuple[float, float | None]]] = {"rlx": [], "sb3": []}
    for r in range(a.rounds):
        for name, fn in (("sb3", run_sb3), ("rlx", run_rlx)):
            torch.set_num_threads(sb3_threads)  # rlx sets its own inside its run
            res[name].append(fn(a.steps, seed=r))
            sps, solved = res[name][-1]
            print(f"round {r} {name}: {sps:,.0f} env steps/s, time to 475: "
                  f"{'%.1f s' % solved if solved else 'not reached'}", flush=True)
    med = {k: statistics.median(s for s, _ in v) for k, v in res.items()}
    print(f"median env steps/s: rlx {med['rlx']:,.0f}, sb3 {med['sb3']:,.0f}, ratio rlx/sb3 {med['rlx'] / med['sb3']:.2f}")
    solved = {k: [t for _, t in v if t is not None] for k, v in res.items()}
    if solved["rlx"] and solved["sb3"]:
        rt, st = statistics.median(solved["rlx"]), statistics.median(solved["sb3"])
        print(f"median time to 475: rlx {rt:.1f} s, sb3 {st:.1f} s, ratio sb3/rlx {st / rt:.2f}")


if __name__ == "__main__":
    main()
