"""Objective ``ppo``: clipped-surrogate PPO with GAE(lambda) for control policies."""

from rlx.hookspecs import hookimpl
from rlx.plugins.ppo.config import PPOConfig


@hookimpl
def rlx_register_objectives(register):
    # the defaults are RL Baselines3 Zoo's tuned CartPole-v1 set (gym's default env)
    register("ppo", "rlx.plugins.ppo.objective:PPO", config=PPOConfig, accepts=("control",), data="rollouts",
             defaults={"optim": {"lr": 1e-3, "schedule": "linear", "max_grad_norm": 0.5},
                       "run": {"env_steps": 100_000, "eval_every": 25}},
             description="PPO: clipped surrogate, GAE, value clipping, entropy bonus, target-KL stop")
