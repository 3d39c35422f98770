"""Objective ``prm-train``: trains a process reward model on step labels from the environment's checker."""

from rlx.hookspecs import hookimpl
from rlx.plugins.prm_train.config import PRMTrainConfig


@hookimpl
def rlx_register_objectives(register):
    register("prm-train", "rlx.plugins.prm_train.objective:PRMTraining", config=PRMTrainConfig, accepts=("text",),
             data="own", produces="reward_model", headline=("eval/step_agreement",),
             requires=("arithmetic",),
             defaults={"optim": {"lr": 3e-4, "schedule": "constant", "max_grad_norm": 1.0},
                       "run": {"steps": 300, "batch_size": 16, "eval_every": 50}},
             description="Process reward model (token classification at step separators) trained on labels from "
                         "the environment's step checker; the saved folder is what --reward prm backend=model loads")
