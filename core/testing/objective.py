"""``check_objective``: one training step as the loop takes it (collect, score, prepare,
minibatches, loss, backward) on a real batch, and a ``state_dict`` that resumes it."""

from __future__ import annotations

import math
from typing import Any

from rlx.testing._support import (
    Subject,
    build_parts,
    check_config,
    check_metrics,
    check_registration,
    collect,
    difference,
    json_state,
    lookup,
    partner,
    registry,
    resolve_run,
    tensor,
)

# steps collected before an objective must have yielded a minibatch (off-policy
# objectives fill a buffer first: dqn's default learning_starts takes 4)
WARMUP_STEPS = 20


def check_objective(name: str, config: dict[str, Any] | None = None, *,
                    env: str | tuple[str, dict[str, Any]] | None = None,
                    policy: str | tuple[str, dict[str, Any]] | None = None) -> list[str]:
    """Run every objective check on the registered objective ``name`` with ``config``
    (overrides of its config model); returns the checks passed.

    ``env`` and ``policy`` (a name, or ``(name, config)``) default to what ``rlx run``
    picks: the first accepted kind's default environment and that kind's default policy
    (the tiny LM for text). The batch is collected by the kind in the objective's
    registered data mode and scored by the environment's default reward. Checks:
    ``group_size`` is an int >= 1, and > 1 when the config has ``num_generations`` > 1;
    ``prepare`` returns ``group/name`` metrics; within a few steps ``minibatches`` yields
    a batch (unless the registration says ``produces="nothing"``) whose ``loss`` is a
    finite scalar with a gradient, and ``backward`` leaves finite gradients on at least
    one trainable parameter of ``policy.model``; where ``gradients`` returns something,
    the same loss and gradients as ``loss`` + ``backward``; ``loss`` metrics are
    ``group/name`` numbers; ``state_dict`` is JSON and, loaded into a freshly built objective, comes
    back unchanged."""
    subject, given = Subject("objective", name), dict(config or {})
    reg = registry()
    spec = lookup(subject, reg)
    check_registration(subject, reg, spec)
    check_config(subject, spec, given)
    (env_name, env_config), (policy_name, policy_config) = partner(env), partner(policy)
    partners = {k: v for k, v in (("env", env_config), ("policy", policy_config)) if v}
    cfg = resolve_run(subject, reg, {"objective": name, "env": env_name, "policy": policy_name}, ("objective", given),
                      partner_config=partners)
    parts = build_parts(subject, cfg, reg)
    objective = parts.objective
    with subject.check("group_size"):
        size = objective.group_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise subject.fail("group_size", f"group_size is {size!r}", "return an int >= 1")
        wanted = getattr(cfg.objective, "num_generations", None)
        if isinstance(wanted, int) and wanted > 1 and size <= 1:
            raise subject.fail("group_size", f"group_size is {size} although num_generations={wanted}",
                               "return config.num_generations from group_size (the kind samples that many per task)")
    _check_step(subject, spec, parts)
    with subject.check("state round trip"):
        state = json_state(subject, "state round trip", objective.state_dict(), "state_dict() after a step")
        fresh = build_parts(subject, cfg, reg).objective
        fresh.load_state_dict(state)
        again = json_state(subject, "state round trip", fresh.state_dict(), "state_dict() after load_state_dict")
        found = difference(state, again, "state")
        if found:
            raise subject.fail("state round trip", f"a fresh objective loaded with state_dict() returns another state "
                                                   f"({found})", "restore every field state_dict() saves")
    return subject.checks()


def _check_step(subject: Subject, spec: Any, parts: Any) -> None:
    """Steps as ``rlx.loop.train_step`` takes them, until one yields a minibatch."""
    from rlx.reward import combine

    objective, policy = parts.objective, parts.policy
    trains = spec.meta["produces"] != "nothing"
    for step in range(1, WARMUP_STEPS + 1):
        batch = collect(subject, parts, step)
        if parts.rewards:
            with subject.check("rewards"):
                combine(parts.rewards, batch)
        with subject.check("prepare"):
            metrics = objective.prepare(batch, policy, parts.reference)
            check_metrics(subject, "prepare", metrics, "prepare()")
        with subject.check("minibatches"):
            chunks = iter(objective.minibatches(batch))
            first = next(chunks, None)
        if first is None:
            if not trains:  # registered as training nothing (best-of-n): no loss to check
                return
            continue
        _check_loss(subject, objective, policy, first)
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        return
    if trains:
        raise subject.fail("minibatches", f"minibatches() yielded nothing in {WARMUP_STEPS} steps, so nothing trains",
                           "yield at least one batch per step once warm (lower a warm-up such as learning_starts "
                           "in config=), or register produces='nothing'")


def _check_loss(subject: Subject, objective: Any, policy: Any, batch: Any) -> None:
    import torch

    with subject.check("loss"):
        out = objective.loss(policy, batch)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise subject.fail("loss", f"loss() returned a {type(out).__name__}", "return (loss_tensor, metrics_dict)")
        loss, metrics = out
        tensor(subject, "loss", loss, "the loss")
        if loss.numel() != 1:
            raise subject.fail("loss", f"the loss has shape {tuple(loss.shape)}", "reduce it to a scalar (a 0-d tensor)")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise subject.fail("loss", f"the loss is {value} on a real batch",
                               "guard divisions and logs (clamp denominators, use log-softmax): the loop skips "
                               "non-finite steps, so the run would never train")
        if not loss.requires_grad:
            raise subject.fail("loss", "the loss has no gradient (requires_grad is False)",
                               "compute it from policy outputs without torch.no_grad() or .detach()")
        check_metrics(subject, "loss", metrics, "loss()")
    with subject.check("gradients"):
        params = [p for p in policy.model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            raise subject.fail("gradients", "backward() left no gradient on any trainable parameter of policy.model",
                               "build the loss from the policy's own outputs (policy.log_probs, policy.model): the "
                               "loop's optimizer trains policy.model's parameters only")
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            raise subject.fail("gradients", "backward() left NaN or Inf in a gradient",
                               "guard the loss's operations (clamp, log-softmax) so gradients stay finite")
        by_autograd = [p.grad for p in params]
        for p in params:
            p.grad = None
    with subject.check("gradients by hand"):
        written = objective.gradients(policy, batch)
        by_hand = [p.grad for p in params]
        for p in params:
            p.grad = None
        if written is None:  # no fast path: nothing to compare
            return
        if not math.isclose(float(written[0]), value, rel_tol=1e-4, abs_tol=1e-6):
            raise subject.fail("gradients by hand", f"gradients() returned the loss {float(written[0])!r}, loss() "
                                                    f"{value!r} on the same batch", "return the loss that loss() computes")
        differ = sum((a is None) != (b is None) or (a is not None and not torch.allclose(a, b, rtol=1e-4, atol=1e-6))
                     for a, b in zip(by_hand, by_autograd))
        if differ:
            raise subject.fail("gradients by hand", f"gradients() wrote other gradients than loss().backward() on "
                                                    f"{differ} of {len(params)} parameters",
                               "write the gradients of loss() (or return None from gradients())")
