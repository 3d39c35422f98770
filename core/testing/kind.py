"""``check_kind``: batches collected deterministically with a ``[B, T]`` mask, an
evaluation of ``eval/...`` metrics, a step count and a ``state_dict`` round trip."""

from __future__ import annotations

from typing import Any

from rlx.testing._support import (
    Subject,
    batch_difference,
    build_parts,
    check_config,
    check_metrics,
    check_registration,
    choose_objective,
    collect,
    difference,
    json_state,
    lookup,
    partner,
    registry,
    resolve_run,
)


def check_kind(name: str, *, env: str | tuple[str, dict[str, Any]] | None = None,
               policy: str | tuple[str, dict[str, Any]] | None = None,
               objective: str | tuple[str, dict[str, Any]] | None = None) -> list[str]:
    """Run every kind check on the registered environment kind ``name``; returns the
    checks passed.

    ``env``, ``policy``, ``objective`` (a name, or ``(name, config)``) default to the
    kind's registered ``default_env`` and ``default_policy`` and to an objective that
    accepts the kind (the default objective where it fits, else one that trains a
    policy). Checks: ``total_steps()`` is an int > 0; ``collect(step)`` returns an
    ``rlx.Batch`` whose ``mask`` is ``[B, T]`` of 0/1, ones then zeros in each row, and
    whose tensors and meta lists all have B rows; two fresh builds after the same seeding
    collect the same batches at steps 1 and 2 (the global RNGs are seeded alike for both,
    as a run seeds them and a checkpoint restores them: a kind that draws from them passes,
    but its batches then depend on the number of processes); ``evaluate()`` returns an ``rlx.Evaluation`` of finite ``eval/...`` metrics;
    ``step_metrics`` are ``group/name`` numbers; ``train_samples`` is a list of dicts;
    ``state_dict`` is JSON and survives a round trip."""
    subject = Subject("kind", name)
    reg = registry()
    spec = lookup(subject, reg)
    check_registration(subject, reg, spec)
    check_config(subject, spec, {})
    (env_name, env_config), (policy_name, policy_config), (objective_name, objective_config) = (
        partner(env), partner(policy), partner(objective))
    env_name = env_name or spec.meta["default_env"]
    if not env_name:
        raise subject.fail("resolve", "the kind names no default_env and none was passed",
                           "register it with default_env=..., or pass env=")
    if lookup(subject, reg, "environment", env_name).meta["kind"] != name:
        raise subject.fail("resolve", f"environment '{env_name}' is not of kind '{name}'",
                           f"pass env= an environment registered with kind='{name}'")
    objective_name = objective_name or choose_objective(reg, spec)
    if objective_name is None:
        raise subject.fail("resolve", "no installed objective accepts this kind",
                           "pass objective= one that does (its registration lists the kind in accepts=)")
    partners = {k: v for k, v in (("env", env_config), ("policy", policy_config), ("objective", objective_config)) if v}
    names = {"objective": objective_name, "env": env_name, "policy": policy_name or spec.meta["default_policy"]}
    cfg = resolve_run(subject, reg, names, None, partner_config=partners)
    parts = build_parts(subject, cfg, reg)
    with subject.check("total_steps"):
        total = parts.kind.total_steps()
        if not isinstance(total, int) or isinstance(total, bool) or total <= 0:
            raise subject.fail("total_steps", f"total_steps() is {total!r} with run.steps=2",
                               "return the number of loop steps as an int > 0")
    first = collect(subject, parts, 1)
    _check_batch(subject, first)
    second = collect(subject, parts, 2)
    with subject.check("deterministic collect"):
        twin = build_parts(subject, cfg, reg)
        for step, mine in ((1, first), (2, second)):
            found = batch_difference(mine, collect(subject, twin, step))
            if found:
                raise subject.fail("deterministic collect", f"two runs with seed {cfg.run.seed} collect different "
                                                            f"batches at step {step} ({found})",
                                   "draw every random choice from RNGs seeded by context.seed and the step (see "
                                   "rlx.distributed.sample_seed), not from wall time or unseeded state")
    with subject.check("evaluate"):
        from rlx.kind import Evaluation

        result = parts.kind.evaluate()
        if not isinstance(result, Evaluation):
            raise subject.fail("evaluate", f"evaluate() returned a {type(result).__name__}", "return rlx.Evaluation(metrics, rows)")
        check_metrics(subject, "evaluate", result.metrics, "evaluate()", prefix="eval/", finite=True)
        if not isinstance(result.rows, list) or not all(isinstance(r, dict) for r in result.rows):
            raise subject.fail("evaluate", "evaluate().rows is not a list of dicts", "return sample rows as dicts")
    with subject.check("step_metrics"):
        check_metrics(subject, "step_metrics", parts.kind.step_metrics(first, 1.0), "step_metrics()")
    with subject.check("train_samples"):
        rows = parts.kind.train_samples(first, 1)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise subject.fail("train_samples", f"train_samples() returned {type(rows).__name__}",
                               "return a list of dicts (one per sample row)")
    with subject.check("state round trip"):
        state = json_state(subject, "state round trip", parts.kind.state_dict(), "state_dict() after collecting")
        twin.kind.load_state_dict(state)
        again = json_state(subject, "state round trip", twin.kind.state_dict(), "state_dict() after load_state_dict")
        found = difference(state, again, "state")
        if found:
            raise subject.fail("state round trip", f"state_dict() after load_state_dict(state) is not that state "
                                                   f"({found})", "restore every field state_dict() saves")
    return subject.checks()


def _check_batch(subject: Subject, batch: Any) -> None:
    import torch

    from rlx.batch import Batch

    with subject.check("batch"):
        if not isinstance(batch, Batch):
            raise subject.fail("batch", f"collect() returned a {type(batch).__name__}", "return an rlx.Batch")
        if "mask" not in batch or batch["mask"].dim() != 2:
            got = f"shape {tuple(batch['mask'].shape)}" if "mask" in batch else "none"
            raise subject.fail("batch", f"the batch's mask is {got}", "give it a 'mask' tensor [B, T]: 1 where a position counts")
        mask = batch["mask"]
        B = mask.shape[0]
        if B == 0:
            raise subject.fail("batch", "the batch has no rows", "collect at least one row")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise subject.fail("batch", f"mask ({B} rows) has values other than 0 and 1",
                               "set mask 1 where a position counts and 0 elsewhere")
        if mask.shape[1] > 1 and not bool((mask[:, 1:] <= mask[:, :-1]).all()):
            raise subject.fail("batch", "a row of mask is not ones then zeros",
                               "count positions from the start of each row: rlx.combine places an outcome reward "
                               "at mask.sum(-1) - 1, which must be the last counted position")
        for key, value in batch.tensors.items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != B:
                raise subject.fail("batch", f"tensor '{key}' does not have {B} rows like mask",
                                   "give every tensor one row per sample (batch.select and split rely on it)")
        for key, value in batch.meta.items():
            if not isinstance(value, list) or len(value) != B:
                raise subject.fail("batch", f"meta '{key}' is not a list of {B}", "give every meta list one item per row")
