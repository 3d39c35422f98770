"""Objective ``dqn``: deep Q-learning for discrete-action control."""

from rlx.hookspecs import hookimpl
from rlx.plugins.dqn.config import DQNConfig


@hookimpl
def rlx_register_objectives(register):
    # RL Baselines3 Zoo's tuned CartPole-v1 set (lr 2.3e-3, [256, 256] relu, ...) plus double DQN and a
    # linearly decaying lr, which keep the end of the run at 500 far more often (README.md); one thread:
    # thousands of tiny steps, where a second thread only adds synchronisation
    register("dqn", "rlx.plugins.dqn.objective:DQN", config=DQNConfig, accepts=("control",), data="rollouts",
             headline=("reward/mean",),
             defaults={"optim": {"lr": 2.3e-3, "schedule": "linear", "max_grad_norm": 10.0},
                       "run": {"env_steps": 100_000, "eval_every": 10, "threads": 1},
                       "policy": {"hidden_sizes": [256, 256], "activation": "relu"}},
             description="DQN: replay buffer, target network (hard or Polyak), epsilon-greedy, double-DQN option")
