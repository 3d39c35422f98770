"""``check_policy``: log-probs of a real batch, a frozen reference copy, and a saved folder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rlx.testing._support import (
    Subject,
    build_parts,
    check_config,
    check_registration,
    choose_objective,
    collect,
    default_kind_name,
    difference,
    lookup,
    partner,
    registry,
    resolve_run,
    tensor,
)


def check_policy(name: str, config: dict[str, Any] | None = None, *,
                 env: str | tuple[str, dict[str, Any]] | None = None) -> list[str]:
    """Run every policy check on the registered policy ``name`` with ``config``
    (overrides of its config model); returns the checks passed.

    The batch is collected by a kind that drives the policy's interface (``env``: its
    environment, a name or ``(name, config)``; default: the kind ``rlx run`` trains on
    when it fits, else one whose default policy this is, and that kind's default
    environment). Checks: ``log_probs`` is ``[B, T]`` like ``mask``, finite where mask
    is 1 and has a gradient; ``log_probs(entropy=True)`` gives ``[B, T]`` entropies;
    ``reference()`` is another policy whose parameters do not require grad, whose
    log-probs equal the policy's and stay put when the policy's weights change; ``save``
    writes a non-empty folder. LM policies also: ``generate`` with ``seeds`` gives each
    prompt the same completion whatever else is in the batch."""
    subject, given = Subject("policy", name), dict(config or {})
    reg = registry()
    spec = lookup(subject, reg)
    check_registration(subject, reg, spec)
    check_config(subject, spec, given)
    env_name, env_config = partner(env)
    kind = _kind_for(subject, reg, spec, env_name)
    objective = choose_objective(reg, kind)
    if objective is None:
        raise subject.fail("resolve", f"no installed objective trains on kind '{kind.name}'",
                           "install one, or pass env= an environment of another kind")
    cfg = resolve_run(subject, reg, {"objective": objective, "env": env_name or kind.meta["default_env"],
                                     "policy": name}, ("policy", given),
                      partner_config={"env": env_config} if env_config else None)
    parts = build_parts(subject, cfg, reg)
    batch = collect(subject, parts, 1)
    policy = parts.policy
    logp = _check_log_probs(subject, policy, batch)
    with subject.check("save"):
        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "policy"
            policy.save(target)
            if not target.is_dir() or not any(target.iterdir()):
                raise subject.fail("save", f"save('{target}') wrote no folder with files in it",
                                   "write the policy into the folder it is given (create it): the run's policy "
                                   "artifact is that folder")
    _check_reference(subject, policy, batch, logp)
    from rlx.policy import LMPolicy

    if isinstance(policy, LMPolicy):
        _check_seeded_generation(subject, policy, batch, cfg.generation.max_new_tokens)
    return subject.checks()


def _kind_for(subject: Subject, reg: Any, spec: Any, env_name: str | None) -> Any:
    if env_name:
        return lookup(subject, reg, "kind", lookup(subject, reg, "environment", env_name).meta["kind"])
    interface, usual = spec.meta["interface"], default_kind_name(reg)
    kinds = [k for k in reg.components["kind"].values()
             if k.meta["interface"] == interface and k.meta["default_env"] and not k.unavailable]
    if not kinds:
        raise subject.fail("resolve", f"no installed kind drives the '{interface}' interface with a default environment",
                           "pass env= an environment whose kind drives this policy")
    kinds.sort(key=lambda k: (k.name != usual, k.meta["default_policy"] != spec.name, k.name))
    return kinds[0]


def _check_log_probs(subject: Subject, policy: Any, batch: Any) -> Any:
    import torch

    mask = batch["mask"]
    with subject.check("log_probs"):
        logp, _ = policy.log_probs(batch)
        tensor(subject, "log_probs", logp, "log_probs(batch)[0]")
        if logp.shape != mask.shape:
            raise subject.fail("log_probs", f"log_probs returned shape {tuple(logp.shape)} for mask {tuple(mask.shape)}",
                               "return one log-prob per action position, [B, T] like batch['mask']")
        counted = mask.to(logp.device) > 0
        if not bool(torch.isfinite(logp[counted]).all()):
            raise subject.fail("log_probs", "log_probs has NaN or Inf where mask is 1",
                               "compute log-probs with log_softmax, in float32")
        if any(p.requires_grad for p in policy.model.parameters()) and not logp.requires_grad:
            raise subject.fail("log_probs", "log_probs has no gradient", "compute it without torch.no_grad() or "
                                                                        ".detach(): objectives backpropagate through it")
    with subject.check("entropy"):
        _, ent = policy.log_probs(batch, entropy=True)
        tensor(subject, "entropy", ent, "log_probs(batch, entropy=True)[1]")
        if ent.shape != mask.shape or not bool(torch.isfinite(ent[counted.to(ent.device)]).all()):
            raise subject.fail("entropy", f"the entropy has shape {tuple(ent.shape)} or non-finite values where mask "
                                          "is 1", "return finite per-position entropies, [B, T] like batch['mask']")
    return logp.detach()


def _check_reference(subject: Subject, policy: Any, batch: Any, logp: Any) -> None:
    import torch

    from rlx.policy import Policy

    mask = batch["mask"].to(logp.device) > 0
    with subject.check("reference frozen"):
        ref = policy.reference()
        if not isinstance(ref, Policy) or ref is policy or ref.model is policy.model:
            raise subject.fail("reference frozen", "reference() returned the policy itself or shares its model",
                               "return a copy: copy.deepcopy(model).eval().requires_grad_(False)")
        if any(p.requires_grad for p in ref.model.parameters()):
            raise subject.fail("reference frozen", "a parameter of reference().model requires grad",
                               "freeze the copy with .requires_grad_(False)")
        with torch.no_grad():
            before = ref.log_probs(batch)[0]
        if before.shape != logp.shape or not torch.allclose(before[mask], logp[mask], atol=1e-4, rtol=1e-4):
            raise subject.fail("reference frozen", "reference().log_probs differs from the policy's at the start",
                               "copy the current weights (and put the copy in eval mode)")
        with torch.no_grad():  # the copy must not follow the policy's training
            for p in policy.model.parameters():
                p.add_(0.05 * torch.ones_like(p))
            after = ref.log_probs(batch)[0]
        found = difference(before, after, "reference log-probs")
        if found:
            raise subject.fail("reference frozen", f"reference() changed when the policy's weights did ({found})",
                               "deep-copy the model: a KL penalty against a moving reference is no penalty")


def _check_seeded_generation(subject: Subject, policy: Any, batch: Any, max_new_tokens: int) -> None:
    prompts = list(dict.fromkeys(batch.meta.get("prompt") or []))[:2]
    if len(prompts) < 2:
        prompts = (prompts or ["Q:1+2\n"]) * 2
    with subject.check("seeded generation"):
        both = policy.generate(prompts, max_new_tokens=max_new_tokens, seeds=[11, 12]).meta["completion"]
        alone = policy.generate(prompts[1:], max_new_tokens=max_new_tokens, seeds=[12]).meta["completion"]
        if both[1] != alone[0]:
            raise subject.fail("seeded generation", f"the completion for seed 12 depends on the rest of the batch "
                                                    f"({both[1]!r} beside another prompt, {alone[0]!r} alone)",
                               "draw each row's tokens from its own generator seeded with its seed: runs split across "
                               "processes or resumed from a checkpoint must sample the same text")
