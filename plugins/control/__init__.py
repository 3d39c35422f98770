"""Environment kind ``control``: vectorized environments stepped by a control policy.
Registration only, so listing plugins stays cheap."""

from rlx.hookspecs import hookimpl


@hookimpl
def rlx_register_kinds(register):
    register("control", "rlx.plugins.control.kind:ControlKind", interface="control", data=("rollouts",),
             default_policy="mlp", default_env="gym", default_objective="ppo",
             headline=("eval/return",),
             description="Vectorized environments stepped in lockstep; run.env_steps sets the length; "
                         "eval/return of the deterministic policy on fresh episodes")
