"""Objective ``rm``: trains a Bradley-Terry reward model (sequence classification) on preference pairs."""

from rlx.hookspecs import hookimpl
from rlx.plugins.rm.config import RMConfig


@hookimpl
def rlx_register_objectives(register):
    register("rm", "rlx.plugins.rm.objective:RewardModelTraining", config=RMConfig, accepts=("preference",),
             data="own", produces="reward_model", headline=("eval/preference_accuracy",),
             defaults={"optim": {"lr": 1e-4, "schedule": "constant", "max_grad_norm": 1.0},
                       "run": {"steps": 200, "batch_size": 32, "eval_every": 50}},
             description="Bradley-Terry reward model (transformers sequence classification) trained on pairs; "
                         "the saved folder is what --reward orm loads")
