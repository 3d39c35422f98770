"""rlx: a plugin-based experiment platform for RL, from classic control to LLM post-training.

The public API. Names that need torch load on first use, so ``import rlx`` (and so
``rlx --help``) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rlx.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "Batch": "rlx.batch",
    "Environment": "rlx.environment",
    "TextEnvironment": "rlx.environment",
    "ControlEnvironment": "rlx.environment",
    "PreferenceEnvironment": "rlx.environment",
    "EnvironmentKind": "rlx.kind",
    "KindContext": "rlx.kind",
    "Evaluation": "rlx.kind",
    "StepVerdict": "rlx.environment",
    "DatasetInfo": "rlx.environment",
    "digest_of": "rlx.environment",
    "file_digest": "rlx.environment",
    "ModelTarget": "rlx.policy",
    "Task": "rlx.environment",
    "Policy": "rlx.policy",
    "LMPolicy": "rlx.policy",
    "ControlPolicy": "rlx.policy",
    "RewardSource": "rlx.reward",
    "RewardConfig": "rlx.reward",
    "combine": "rlx.reward",
    "Objective": "rlx.objective",
    "Launcher": "rlx.launcher",
    "RunRequest": "rlx.launcher",
    "RunExit": "rlx.launcher",
    "compose": "rlx.config",
    "resolve": "rlx.config",
    "Resolved": "rlx.config",
    "train": "rlx.loop",
    "RunResult": "rlx.loop",
    "rank_world": "rlx.distributed",
    "sample_seed": "rlx.distributed",
    "sum_over_ranks": "rlx.distributed",
    "unwrap": "rlx.policy",
    "gather_rows": "rlx.distributed",
    "mean_over_ranks": "rlx.distributed",
    "rng_state": "rlx.environment",
    "set_rng_state": "rlx.environment",
    "reward_events": "rlx.reward",
    "applicable_rows": "rlx.reward",
    "RlxError": "rlx.errors",
    "UsageError": "rlx.errors",
    "ConfigError": "rlx.errors",
    "PluginError": "rlx.errors",
    "get_registry": "rlx.registry",
}

__all__ = ["hookimpl", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlx' has no attribute {name!r}")
