"""Conformance suites for rlx plugins: one call checks a component of yours the way the
loop will use it, and a fixture runs a short ``rlx run`` in-process.

Install your plugin (``pip install -e .``) so rlx finds its entry point, then in your tests::

    from rlx.testing import check_environment, check_reward

    def test_env_conforms():
        check_environment("my_env")                        # name as registered

    def test_reward_conforms():
        check_reward("my_reward", {"bonus": 2.0}, env="my_env")

    def test_trains(rlx_run):                              # fixture from rlx's pytest plugin
        metrics = rlx_run("--env", "my_env", "--reward", "my_reward", steps=2)
        assert metrics["reward/my_reward"] == metrics["reward/my_reward"]  # not NaN

Each ``check_*`` looks the component up in ``rlx.registry.get_registry()``, builds it the
way ``rlx run`` does (``rlx.config.compose``/``resolve``, then ``rlx.loop.build`` after
seeding; a partner it needs, an environment to score or a policy to train, is what
``rlx run`` would pick, or the one you pass by name or as ``(name, config)``), runs every
check of its kind and returns the names of the checks passed. A failure raises
``ConformanceError`` (an ``AssertionError``): ``<kind> '<name>' fails check '<check>':
<what is wrong>; <what to fix>``. Runs are small: batches of 2 tasks, 16 new tokens.

Every suite first checks:

- registration cheap: importing the plugin's entry-point module in a fresh interpreter
  imports none of torch, transformers, mlflow (``rlx plugins list`` imports them all);
- config: every field of the config model has a description and a default (a field you
  pass in ``config`` may be required, such as a data file's path) and the defaults validate.

Then, per kind:

- ``check_environment(name, config=None, *, seed=0)``: same seed, same tasks; another
  seed, other tasks; a held-out split that is the same on every call and for a fresh
  environment; a JSON ``state_dict`` that, loaded into a fresh environment, resumes
  sampling with the same tasks (control environments: same observations under the same
  actions, repeatable ``eval_episodes``, state round trip).
- ``check_reward(name, config=None, *, env=None)``: on a batch the kind collects, ``score``
  is ``[B]`` (registered ``outcome``) or ``[B, T]`` (``process``, NaN off-step and where
  mask is 0); no Inf; not NaN ("not applicable") for every sample; ``summarize`` gives
  ``[B]``; ``combine`` places it.
- ``check_objective(name, config=None, *, env=None, policy=None)``: one loop step on a
  real batch in the registered data mode (default partners: the kind's default
  environment and policy, the tiny LM for text): ``prepare`` and ``loss`` metrics are
  ``group/name`` numbers, the loss is a finite scalar whose ``backward`` leaves finite
  gradients on ``policy.model``, ``group_size`` > 1 when ``num_generations`` > 1, and
  ``state_dict`` survives JSON and a fresh build.
- ``check_policy(name, config=None, *, env=None)``: ``log_probs`` ``[B, T]``, finite, with
  a gradient, and entropies; ``reference()`` is a frozen copy with the same log-probs
  that does not move with the policy; ``save`` writes a folder; LM policies sample the
  same completion for a prompt and seed whatever else is in the batch.
- ``check_kind(name, *, env=None, policy=None, objective=None)``: ``total_steps() > 0``;
  ``collect(step)`` gives an ``rlx.Batch`` with a 0/1 ``mask`` ``[B, T]``, the same for
  the same seed and step; ``evaluate()`` gives finite ``eval/...`` metrics;
  ``step_metrics`` and ``train_samples`` have the documented shapes; ``state_dict``
  survives a round trip.

``run(*cli_args, steps=2, home=None, tracking=False, **sets)`` (and the ``rlx_run``
pytest fixture, the same with ``home`` under ``tmp_path``) trains in this process and
returns the final metrics; see ``rlx.testing.runner.run``.

Checkpoints write ``state_dict`` results with ``json.dumps``, so the suites require
JSON-serialisable state (tensors as lists).
"""

from __future__ import annotations

from rlx.testing._support import ConformanceError
from rlx.testing.environment import check_environment
from rlx.testing.kind import check_kind
from rlx.testing.objective import check_objective
from rlx.testing.policy import check_policy
from rlx.testing.reward import check_reward
from rlx.testing.runner import RunMetrics, run

__all__ = ["ConformanceError", "RunMetrics", "check_environment", "check_kind", "check_objective", "check_policy",
           "check_reward", "run"]
