"""Objective ``ppo``: clipped-surrogate PPO with GAE(lambda), for control and LM policies."""

from rlx.hookspecs import hookimpl
from rlx.plugins.ppo.config import PPOConfig


@hookimpl
def rlx_register_objectives(register):
    # control defaults: RL Baselines3 Zoo's tuned CartPole-v1 set (gym's default env);
    # text defaults: token-level PPO on an LM with a value head, as in TRL's PPO
    register("ppo", "rlx.plugins.ppo.objective:PPO", config=PPOConfig, accepts=("text", "control"), data="rollouts",
             headline=("reward/mean", "kl/ref"),
             defaults={"optim": {"lr": 1e-3, "schedule": "linear", "max_grad_norm": 0.5},
                       "run": {"env_steps": 100_000, "eval_every": 25}},
             # one torch thread on control: a [256, 64] network's ops are too small for a
             # second thread to pay (measured: SB3 itself steps 10% faster on one)
             kind_defaults={"control": {"run": {"threads": 1}}, "text": {
                 "objective": {"gamma": 1.0, "gae_lambda": 0.95, "epochs": 2, "num_minibatches": 1,
                               "clip_schedule": "constant", "clip_value": 0.2, "vf_coef": 0.1},
                 "optim": {"lr": 1e-4, "schedule": "constant", "max_grad_norm": 1.0},
                 "run": {"env_steps": None, "eval_every": 50, "batch_size": 64}}},
             description="PPO: clipped surrogate, GAE, value clipping, KL penalty; MLP or LM (value head) policies")
