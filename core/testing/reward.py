"""``check_reward``: the reward scored on a real batch collected through the kind, with
the shape its registered granularity promises and no value ``combine`` cannot place."""

from __future__ import annotations

from typing import Any

from rlx.testing._support import (
    Subject,
    build_parts,
    check_config,
    check_registration,
    choose_objective,
    collect,
    default_kind_name,
    lookup,
    partner,
    registry,
    resolve_run,
    tensor,
)


def check_reward(name: str, config: dict[str, Any] | None = None, *,
                 env: str | tuple[str, dict[str, Any]] | None = None) -> list[str]:
    """Run every reward check on the registered reward ``name`` with ``config`` (overrides
    of its config model); returns the checks passed.

    The batch is collected by the environment's kind with its default policy and an
    objective that learns from rollouts. ``env``: the environment to score (a name, or
    ``(name, config)``); default: one whose registration names this reward as its
    default, else the one ``rlx run`` picks. Checks: ``score`` returns ``[B]`` for an
    ``outcome`` registration and ``[B, T]`` for a ``process`` one; no value is infinite;
    a process score is NaN wherever ``mask`` is 0; not every sample is all-NaN (NaN means
    "not applicable", and a batch where nothing applies is what a broken scorer returns);
    ``summarize`` gives ``[B]``; ``combine`` places the scores and its rewards are finite."""
    import torch

    from rlx.reward import combine

    subject, given = Subject("reward", name), dict(config or {})
    reg = registry()
    spec = lookup(subject, reg)
    check_registration(subject, reg, spec)
    check_config(subject, spec, given)
    env_name, env_config = partner(env)
    if env_name is None:
        homes = sorted(s.name for s in reg.components["environment"].values()
                       if s.meta["default_reward"] == name and not s.unavailable)
        env_name = homes[0] if homes else None
    kind_name = lookup(subject, reg, "environment", env_name).meta["kind"] if env_name else default_kind_name(reg)
    objective = choose_objective(reg, lookup(subject, reg, "kind", kind_name or ""), data="rollouts")
    if objective is None:
        raise subject.fail("resolve", f"no installed objective learns from rollouts of kind '{kind_name}'",
                           "pass env= an environment of a kind that an installed rollout objective trains on")
    cfg = resolve_run(subject, reg, {"objective": objective, "env": env_name, "reward": [name]}, ("reward", given),
                      partner_config={"env": env_config} if env_config else None)
    parts = build_parts(subject, cfg, reg)
    batch = collect(subject, parts, 1)
    source = parts.rewards[0]
    granularity = spec.meta["granularity"]
    with subject.check("shape"):
        B, T = batch["mask"].shape
        scores = tensor(subject, "shape", source.score(batch), "score(batch)")
        want = (B,) if granularity == "outcome" else (B, T)
        if tuple(scores.shape) != want:
            other = "process" if scores.dim() == 2 else "outcome"
            fix = (f"return one score per sample, shape {want}" if tuple(scores.shape) not in ((B,), (B, T)) else
                   f"register it with granularity='{other}', or return shape {want}")
            raise subject.fail("shape", f"score() returned shape {tuple(scores.shape)} for a batch of mask {(B, T)}, "
                                        f"but it is registered as granularity='{granularity}' ({want})", fix)
    with subject.check("values"):
        values = scores.detach().float()
        if bool(torch.isinf(values).any()):
            raise subject.fail("values", "score() returned an infinite value",
                               "return finite scores, or NaN where the reward does not apply")
        if granularity == "process":
            padded = (batch["mask"] == 0).to(values.device) & ~torch.isnan(values)
            if bool(padded.any()):
                row, col = (int(i) for i in padded.nonzero()[0])
                raise subject.fail("values", f"score() put a number at [{row}, {col}], where mask is 0 (no token)",
                                   "leave every position but the last token of each step NaN")
        flat = values.reshape(B, -1)
        if bool(torch.isnan(flat).all(-1).all()):
            raise subject.fail("values", f"score() returned NaN for every sample of a real batch of {B}",
                               "NaN means 'not applicable'; the loop skips a step where nothing applies as a broken "
                               "scorer: score the samples the reward is for")
    with subject.check("summarize"):
        summary = tensor(subject, "summarize", source.summarize(scores), "summarize(scores)")
        if tuple(summary.shape) != (B,):
            raise subject.fail("summarize", f"summarize() returned shape {tuple(summary.shape)}",
                               f"return one number per sample, shape ({B},): the loop logs its mean")
    with subject.check("combine"):
        combine([source], batch)
        if not bool(torch.isfinite(batch["rewards"]).all()):
            raise subject.fail("combine", "combine() produced non-finite rewards from score()",
                               "return finite scores, or NaN where the reward does not apply")
    return subject.checks()
