"""Objective ``dpo``: direct preference optimization on (prompt, chosen, rejected) pairs."""

from rlx.hookspecs import hookimpl
from rlx.plugins.dpo.config import DPOConfig


@hookimpl
def rlx_register_objectives(register):
    register("dpo", "rlx.plugins.dpo.objective:DPO", config=DPOConfig, accepts=("preference",),
             data="preferences",
             defaults={"optim": {"lr": 5e-5, "schedule": "constant", "max_grad_norm": 1.0},
                       "run": {"steps": 200, "batch_size": 32, "eval_every": 50}},
             description="DPO with sigmoid/IPO/hinge losses and f-divergence constraints, offline on preference pairs")
