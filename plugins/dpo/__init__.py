"""Objective ``dpo``: direct preference optimization on (prompt, chosen, rejected) pairs."""

from rlx.hookspecs import hookimpl
from rlx.plugins.dpo.config import DPOConfig


@hookimpl
def rlx_register_objectives(register):
    register("dpo", "rlx.plugins.dpo.objective:DPO", config=DPOConfig, accepts=("preference",),
             data="preferences", headline=("eval/preference_accuracy", "kl/ref"), requires=("text",),
             # an NLL term on the chosen side by default: pure DPO (nll_weight=0) lowered the
             # tiny policy's arithmetic accuracy from 0.43 to 0.21 in 200 steps; with it, it rose
             defaults={"optim": {"lr": 1e-4, "schedule": "constant", "max_grad_norm": 1.0},
                       "objective": {"nll_weight": 1.0},
                       "run": {"steps": 300, "batch_size": 32, "eval_every": 50}},
             description="DPO with sigmoid/IPO/hinge losses and f-divergence constraints, offline on preference pairs")
