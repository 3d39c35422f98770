"""Objective ``best-of-n``: sample N per prompt, keep the best by reward; measure, not train."""

from rlx.hookspecs import hookimpl
from rlx.plugins.best_of_n.config import BestOfNConfig


@hookimpl
def rlx_register_objectives(register):
    register("best-of-n", "rlx.plugins.best_of_n.objective:BestOfN", config=BestOfNConfig, accepts=("text",),
             data="rollouts", produces="nothing", headline=("reward/mean",),
             # a measurement, not training: a few batches give a tight curve, no evaluation
             # is run (nothing changes the policy) and rollouts sample the policy as it is
             defaults={"run": {"steps": 4, "batch_size": 32, "eval_every": 0},
                       "generation": {"temperature": 1.0}},
             description="Best-of-n sampling (no training): reward and gold accuracy against n, with the KL bound")
