"""Environment kinds ``text`` and ``preference``: how LM policies are trained and evaluated
on prompt tasks and on preference pairs. Registration only, so listing plugins stays cheap."""

from rlx.hookspecs import hookimpl


@hookimpl
def rlx_register_kinds(register):
    register("text", "rlx.plugins.text.kinds:TextKind", interface="lm", data=("rollouts", "demonstrations", "own"),
             default_policy="tiny", default_env="arithmetic", default_objective="grpo", headline=("eval/accuracy",),
             description="Prompt -> completion tasks: sampled groups, gold demonstrations or an objective's own "
                         "batches; greedy accuracy on the held-out split")
    register("preference", "rlx.plugins.text.kinds:PreferenceKind", interface="lm", data=("preferences", "own"),
             default_policy="tiny", default_env="preferences", default_objective="dpo", headline=("eval/accuracy",),
             description="(prompt, chosen, rejected) pairs as 2n rows; greedy accuracy where the pairs' prompts "
                         "have checkable answers")
