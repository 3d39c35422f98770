"""The ``bandit`` kind: a k-armed bandit trained by ``rlx run`` with its own environment,
policy, reward and objective, none of which rlx knows about.

This package module stays empty: the registration module imports ``.config`` from here,
and anything imported at this level would be imported by every ``rlx`` command.
"""
