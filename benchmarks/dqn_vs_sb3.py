"""rlx ``dqn`` against stable-baselines3 DQN on CartPole-v1 with RL Baselines3 Zoo's tuned
hyperparameters in both (one env, 256 env steps then 128 gradient steps per update,
lr 2.3e-3 constant, batch 64, buffer 100k, learning_starts 1000, gamma 0.99, a hard target
copy before each burst of gradient steps, exploration over the first 16% down to 0.04,
[256, 256] ReLU, Huber loss, max grad norm 10, plain DQN targets), alternating in one
process, same machine. Needs the ``bench`` extra (stable-baselines3).

    python benchmarks/dqn_vs_sb3.py                          # 50k env steps (the Zoo's), 2 rounds
    python benchmarks/dqn_vs_sb3.py --steps 2048 --rounds 1  # smoke

Reports training environment steps per second (evaluation excluded) and training time
until the greedy policy first scores >= 475 over 10 episodes (evaluated every 10 updates,
2,560 env steps, in both), and the ratios. The settings each library ran with are
printed, read back from the live objects.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from sb3_timer import solve_timer  # benchmarks/ is on sys.path when a script here runs

EVAL_EVERY_UPDATES = 10  # x 256 env steps = 2,560
ZOO = {"learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000, "learning_starts": 1000, "gamma": 0.99,
       "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128, "exploration_fraction": 0.16,
       "exploration_final_eps": 0.04, "net_arch": [256, 256]}


def run_sb3(steps: int, seed: int) -> tuple[float, float | None, dict[str, Any]]:
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=1, seed=seed)
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=seed + 10_000)
    kw = {k: v for k, v in ZOO.items() if k != "net_arch"}
    model = DQN("MlpPolicy", env, policy_kwargs={"net_arch": ZOO["net_arch"]}, seed=seed, device="cpu", verbose=0, **kw)
    timer = solve_timer(eval_env, EVAL_EVERY_UPDATES)
    timer.start()
    model.learn(total_timesteps=steps, callback=timer)
    train_s = time.perf_counter() - timer.t0 - timer.paused
    opt = model.policy.optimizer
    settings = {"optimizer": f"{type(opt).__name__} lr {opt.param_groups[0]['lr']:g} (constant)",
                "batch / buffer / starts": f"{model.batch_size} / {model.buffer_size} / {model.learning_starts}",
                "envs x steps, gradient steps": f"{env.num_envs} x {model.train_freq.frequency}, {model.gradient_steps}",
                "target update": f"every {model.target_update_interval} env steps, tau {model.tau}",
                "exploration": f"{model.exploration_initial_eps} -> {model.exploration_final_eps} over "
                               f"{model.exploration_fraction:.0%}",
                "network": f"{ZOO['net_arch']} {model.policy.activation_fn.__name__.lower()}",
                "max grad norm": model.max_grad_norm, "gamma": model.gamma,
                "threads": __import__("torch").get_num_threads()}
    return steps / train_s, timer.solved_at, settings


def run_rlx(steps: int, seed: int, extra: list[str]) -> tuple[float, float | None, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as home:
        os.environ["RLX_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from mlflow.tracking import MlflowClient

        from rlx.config import compose, resolve
        from rlx.loop import train
        from rlx.registry import get_registry

        reg = get_registry()
        sets = ["env.id=CartPole-v1", "env.num_envs=1", "objective.train_freq=256", "objective.gradient_steps=128",
                # rlx counts the target interval in gradient steps: a copy before each burst of 128, as
                # the Zoo's 10 env steps give in SB3 (which trains only after every 256 env steps)
                "objective.target_update_interval=128", "objective.tau=1.0", "objective.double_q=false",
                f"optim.lr={ZOO['learning_rate']}", "optim.schedule=constant", "optim.max_grad_norm=10",
                f"objective.minibatch_size={ZOO['batch_size']}", f"objective.buffer_size={ZOO['buffer_size']}",
                f"objective.learning_starts={ZOO['learning_starts']}", f"objective.gamma={ZOO['gamma']}",
                f"objective.exploration_fraction={ZOO['exploration_fraction']}",
                f"objective.end_e={ZOO['exploration_final_eps']}", "policy.hidden_sizes=[256, 256]",
                f"run.env_steps={steps}", f"run.eval_every={EVAL_EVERY_UPDATES}", "run.save_policy=false",
                "run.checkpoint_every=0", *extra]
        cfg = resolve(compose(None, {"objective": "dqn", "env": "gym", "policy": "mlp", "seed": seed}, sets), reg)
        result = train(cfg, reg, progress=False)
        client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
        step_s = {m.step: m.value for m in client.get_metric_history(result.mlflow_run_id, "perf/step_s")}
        evals = sorted((m.step, m.value) for m in client.get_metric_history(result.mlflow_run_id, "eval/return"))
    d = cfg.to_dict()
    o, op, pol = d["objective"], d["optim"], d["policy"]
    settings = {"optimizer": f"AdamW (weight decay {op['weight_decay']}) lr {op['lr']:g} ({op['schedule']})",
                "batch / buffer / starts": f"{o['minibatch_size']} / {o['buffer_size']} / {o['learning_starts']}",
                "envs x steps, gradient steps": f"{d['env']['num_envs']} x {o['train_freq']}, {o['gradient_steps']}",
                "target update": f"every {o['target_update_interval']} gradient steps, tau {o['tau']}",
                "exploration": f"{o['start_e']} -> {o['end_e']} over {o['exploration_fraction']:.0%}",
                "network": f"{pol['hidden_sizes']} {pol.get('activation', '')}".strip(),
                "max grad norm": op["max_grad_norm"], "gamma": o["gamma"],
                "threads": d["run"]["threads"] or "all"}
    per_step = d["env"]["num_envs"] * o["train_freq"]
    train_s = sum(step_s.values())
    solved = next((s for s, v in evals if v >= 475 and s > 0), None)
    return (len(step_s) * per_step / train_s, (sum(v for s, v in step_s.items() if s <= solved) if solved else None),
            settings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50_000, help="env steps per run (the Zoo's CartPole budget: 50k)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads for both (0: each library's default)")
    a = ap.parse_args()
    import torch

    sb3_threads = a.threads or torch.get_num_threads()
    extra = [f"run.threads={a.threads}"] if a.threads else []
    print(f"DQN on CartPole-v1, {a.steps:,} env steps per run, {a.rounds} round(s); torch threads: sb3 "
          f"{sb3_threads}, rlx {a.threads or 'its default (1 for control)'}", flush=True)
    res: dict[str, list[tuple[float, float | None]]] = {"rlx": [], "sb3": []}
    for r in range(a.rounds):
        shown: dict[str, dict[str, Any]] = {}
        for name in ("sb3", "rlx"):
            torch.set_num_threads(sb3_threads)  # rlx sets its own inside its run
            sps, solved, shown[name] = run_sb3(a.steps, r) if name == "sb3" else run_rlx(a.steps, r, extra)
            res[name].append((sps, solved))
            print(f"round {r} {name}: {sps:,.0f} env steps/s, time to 475: "
                  f"{'%.1f s' % solved if solved else 'not reached'}", flush=True)
        if r == 0:
            print("settings (read back from each library's live objects):")
            for key in shown["sb3"]:
                print(f"  {key:<30}{str(shown['rlx'][key]):<48}{shown['sb3'][key]}")
    med = {k: statistics.median(s for s, _ in v) for k, v in res.items()}
    print(f"median env steps/s: rlx {med['rlx']:,.0f}, sb3 {med['sb3']:,.0f}, ratio rlx/sb3 "
          f"{med['rlx'] / med['sb3']:.2f} (target >= 2)")
    solved = {k: [t for _, t in v if t is not None] for k, v in res.items()}
    print("reached 475: " + ", ".join(f"{k} {len(v)}/{a.rounds}" for k, v in solved.items()))
    if solved["rlx"] and solved["sb3"]:
        rt, st = statistics.median(solved["rlx"]), statistics.median(solved["sb3"])
        print(f"median time to 475: rlx {rt:.1f} s, sb3 {st:.1f} s, ratio sb3/rlx {st / rt:.2f} (target >= 1)")


if __name__ == "__main__":
    main()
