"""rlx-example-plugin: registration only.

rlx imports this module for every ``rlx`` command (even ``rlx plugins list``), so it
must stay cheap: it imports the pydantic config models and nothing else. The components
themselves are given by import path and loaded only when a run uses them.
"""

from rlx import hookimpl
from rlx_example_plugin.bandit.config import BanditConfig, GradientBanditConfig, PayoutConfig, SoftmaxArmsConfig
from rlx_example_plugin.config import BrevityConfig, CountdownConfig

__version__ = "0.1.0"

_BANDIT = "rlx_example_plugin.bandit"


@hookimpl
def rlx_register_rewards(register):
    register("brevity", "rlx_example_plugin.reward:Brevity", config=BrevityConfig,
             granularity="outcome", kinds=("text",),
             description="Outcome reward for short completions: 1 - min(len, target_length) / target_length")
    register("payout", f"{_BANDIT}.reward:Payout", config=PayoutConfig, granularity="outcome",
             description="A bandit environment's payout for the pulled arm")


@hookimpl
def rlx_register_environments(register):
    register("countdown", "rlx_example_plugin.env:CountdownEnv", config=CountdownConfig,
             kind="text", default_reward="verifier",
             description="Count down: a start number minus a few others, with gold steps (Q:9-2-3)")
    register("bandit", f"{_BANDIT}.env:GaussianBandit", config=BanditConfig, kind="bandit", default_reward="payout",
             description="Gaussian k-armed bandit: arm means ~ N(0, mean_std^2) by seed, payouts ~ N(mean, noise^2)")


# A new environment kind: how batches are collected from bandit environments and how a
# policy is evaluated on them. rlx itself knows nothing of bandits.
@hookimpl
def rlx_register_kinds(register):
    register("bandit", f"{_BANDIT}.kind:BanditKind", interface="bandit", data=("rollouts",),
             default_policy="softmax-arms", default_env="bandit", default_objective="gradient-bandit",
             headline=("eval/optimal_arm_prob", "eval/regret"),
             description="k-armed bandits: run.batch_size pulls per step; exact eval/optimal_arm_prob and "
                         "eval/regret from the policy's probabilities and the true means")


@hookimpl
def rlx_register_policies(register):
    register("softmax-arms", f"{_BANDIT}.policy:SoftmaxArms", config=SoftmaxArmsConfig, interface="bandit",
             description="One learnable logit per arm: pi = softmax(logits)")


@hookimpl
def rlx_register_objectives(register):
    register("gradient-bandit", f"{_BANDIT}.objective:GradientBandit", config=GradientBanditConfig,
             accepts=("bandit",), data="rollouts", headline=("reward/mean",),
             # what `rlx run --objective gradient-bandit` trains with when nothing else is said:
             # env and policy come from the kind's defaults, these from here
             defaults={"run": {"steps": 100, "batch_size": 32, "eval_every": 10},
                       "optim": {"lr": 0.05}},
             description="REINFORCE on arm pulls with a running-mean (or batch-mean) baseline")
