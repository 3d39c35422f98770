"""Reward ``ensemble``: several reward models or sources aggregated by mean, min or uwo."""

from rlx.hookspecs import hookimpl
from rlx.plugins.ensemble.config import EnsembleConfig


@hookimpl
def rlx_register_rewards(register):
    register("ensemble", "rlx.plugins.ensemble.reward:Ensemble", config=EnsembleConfig, granularity="outcome", kinds=("text",),
             description="Reward models and/or sources aggregated by mean | min | uwo (mean - lambda var)")
