"""The rlx hook specifications: the whole contract between rlx and a plugin.

A plugin is a module (or object) listed under the ``rlx`` entry-point group that
implements some of these hooks with ``@rlx.hookimpl``. Registration must stay cheap:
register components by import path (``"pkg.module:Class"``) so that listing plugins
never imports torch, transformers or mlflow.

Example::

    import rlx
    from pydantic import BaseModel

    class ShoutConfig(BaseModel):
        bonus: float = 1.0

    @rlx.hookimpl
    def rlx_register_rewards(register):
        register("shout", "my_pkg.reward:Shout", config=ShoutConfig,
                 granularity="outcome", description="1 if the completion ends with '!'")
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "rlx"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rlx_register_objectives(register: Any) -> None:
    """Register algorithms: ``register(name, factory, config=Model, accepts=("text",),
    data="rollouts"|"demonstrations", description=...)``.

    ``accepts`` lists the environment kinds the objective can train on; ``data`` says
    whether it learns from the policy's own rollouts or from gold demonstrations."""


@hookspec
def rlx_register_rewards(register: Any) -> None:
    """Register reward sources: ``register(name, factory, config=Model,
    granularity="outcome"|"process", description=...)``."""


@hookspec
def rlx_register_environments(register: Any) -> None:
    """Register environments: ``register(name, factory, config=Model, kind="text",
    default_reward="verifier", description=...)``."""


@hookspec
def rlx_register_policies(register: Any) -> None:
    """Register policies: ``register(name, factory, config=Model, kind="lm",
    description=...)``."""


@hookspec
def rlx_register_commands(app: Any) -> None:
    """Add typer commands to the ``rlx`` CLI: ``@app.command() def hello(): ...``."""


@hookspec
def rlx_run_start(run_id: str, config: dict) -> None:
    """Called once on the main process after the run is created and before step 0."""


@hookspec
def rlx_step_end(step: int, metrics: dict) -> bool | None:
    """Called after every optimizer step with that step's metrics. Return True to stop
    the run early (it still ends FINISHED)."""


@hookspec
def rlx_run_end(run_id: str, status: str, metrics: dict) -> None:
    """Called once when the run ends, with its final status and last metrics."""
