"""Algorithm code shared by several plugin families; a library, not a plugin.

- ``policy_gradient``: the clipped policy-gradient surrogate, its token aggregations
  (``loss_type``) and the ``PolicyGradient`` objective skeleton of grpo, rloo and
  reinforce.
- ``policy_gradient_config``: ``PolicyGradientConfig``, the settings those three
  families' configs inherit (torch-free, so registering them stays cheap).
- ``scorers``: learned reward-model scorers, trained by rm and prm_train and used by
  orm, prm (backend ``model``) and ensemble.

Why not in core (``rlx``): core knows no algorithm; it defines the protocols (objective,
policy, environment, reward) and the loop, and every algorithm arrives as a plugin.
Why not a plugin: it registers no component, so it has no entry point and no hooks; the
families that use it import it like any library (``from rlx.plugins.shared.scorers import
Scorer``). Importing this package imports nothing heavy: each module is imported on its own.
"""
