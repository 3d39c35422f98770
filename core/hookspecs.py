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

A plugin's hooks may read settings of their own from the run's ``[plugins.<name>]``
config table (``--set plugins.<name>.key=value``), handed to ``rlx_run_start``.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "rlx"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rlx_register_objectives(register: Any) -> None:
    """Register algorithms: ``register(name, factory, config=Model, description=..., **fields)``.

    The factory is called as ``factory(config, env=..., env_kind=..., max_new_tokens=...)``
    and returns an ``rlx.Objective``. Fields (all optional):

    - ``accepts``: environment kinds it trains on (default ``("text",)``).
    - ``data``: what it learns from, a data mode of those kinds: ``rollouts`` (the
      policy's samples, scored by rewards), ``demonstrations`` (gold completions),
      ``preferences`` (pairs) or ``own`` (its ``make_batch`` builds the batch).
    - ``produces``: what the run leaves: ``policy`` (default), ``reward_model``, ``nothing``.
    - ``headline``: metric names ``rlx run`` prints at the end and ``rlx runs`` shows.
    - ``defaults``: ``{section: {field: value}}`` under the user's values (``run``,
      ``optim``, ``generation``, ``objective``, ``env``, ``policy``);
      ``kind_defaults``: ``{kind: {section: {...}}}`` on top of those for one kind.
    - ``default``: True for the objective ``rlx run`` uses when neither an objective nor an
      environment is named (with an environment, its kind's ``default_objective``); one
      installed objective at most may claim it.
    - ``requires``: plugins (entry-point names) whose code this one imports."""


@hookspec
def rlx_register_rewards(register: Any) -> None:
    """Register reward sources: ``register(name, factory, config=Model,
    granularity="outcome"|"process", kinds=("text",), requires=(), description=...)``; the
    factory is called as ``factory(config, env=..., name=...)`` and returns an
    ``rlx.RewardSource``. ``kinds``: the environment kinds whose batches it can score
    (empty: any); a run that combines it with another kind fails before anything is built."""


@hookspec
def rlx_register_environments(register: Any) -> None:
    """Register environments: ``register(name, factory, config=Model, kind="text",
    default_reward=None, task_field=None, requires=(), description=...)``; the factory is
    called as ``factory(config, seed=...)`` and returns an ``rlx.Environment`` of that kind.
    ``default_reward``: the reward source a run uses when none is named (e.g. "verifier").
    ``task_field``: the config field whose value names the task (gym's ``id``), for run
    names and the default experiment ``rlx/<task>``; unset: the environment's name."""


@hookspec
def rlx_register_policies(register: Any) -> None:
    """Register policies: ``register(name, factory, config=Model, interface="lm",
    requires=(), description=...)``; the factory is called as ``factory(config, env=...)``.
    ``interface`` names the policy interface it implements (``lm``: ``rlx.LMPolicy``,
    ``control``: ``rlx.ControlPolicy``, or one a kind plugin defines)."""


@hookspec
def rlx_register_kinds(register: Any) -> None:
    """Register environment kinds: ``register(name, factory, interface="lm",
    data=("rollouts",), default_policy=..., default_env=..., default_objective=...,
    headline=(...), requires=(), description=...)``; no ``config``: a run has no section for
    a kind's settings.

    The factory is called as ``factory(config, context=rlx.KindContext(...))`` (``config``
    an empty model) and returns an
    ``rlx.EnvironmentKind``: how batches are collected from environments of this kind and
    how a policy is evaluated on them. ``interface``: the policy interface it drives;
    ``data``: the objectives' data modes it can collect; ``default_policy``,
    ``default_env`` and ``default_objective``: what ``rlx run`` picks when none is named
    (``--env gym`` alone trains the control kind's default objective with its default
    policy); ``headline``: its evaluation metrics, shown at the end of a run."""


@hookspec
def rlx_register_launchers(register: Any) -> None:
    """Register sweep launchers: ``register(name, factory, config=Model, default=False,
    requires=(), description=...)``; the factory is called as ``factory(config)`` and returns
    an ``rlx.Launcher``: where ``rlx sweep`` starts its runs (``--launcher NAME``, settings
    with ``--set launcher.KEY=VALUE``). ``default``: the launcher a sweep uses when none is
    named; one installed launcher at most may claim it."""


@hookspec
def rlx_register_commands(app: Any) -> None:
    """Add typer commands to the ``rlx`` CLI: ``@app.command() def hello(): ...``."""


@hookspec
def rlx_run_start(run_id: str, config: dict) -> None:
    """Called once on the main process after the run is created and before step 0."""


@hookspec
def rlx_step_end(step: int, metrics: dict) -> bool | None:
    """Called after every loop step with that step's metrics. Return True to stop the run
    early: it ends FINISHED after a final checkpoint and evaluation, tagged
    ``rlx.stopped_by`` (the plugin's name) and ``rlx.stopped_at_step``."""


@hookspec
def rlx_run_end(run_id: str, status: str, metrics: dict) -> None:
    """Called once when the run ends, with its final status and last metrics."""
