"""Process reward model training on step labels from the environment's step checker.

``setup`` keeps a frozen copy of the policy as the *sampler* and makes the policy itself
the PRM, which the loop then trains, checkpoints and saves
(``rlx.plugins.shared.scorers``): with ``head=implicit`` the LM stays an LM and a step's
logit is ``beta`` times its summed
log-ratio to the sampler up to the step's separator (the sampler is saved beside it as
``reference/``); with ``head=classifier`` it becomes a one-label token-classification
model with the same backbone, whose logit at the separator is the step's. Each batch holds,
per task, completions sampled from the starting policy plus (optionally) the gold
solution and a gold solution with one slip; every step of every completion is labelled
by ``env.check_steps`` and the PRM learns ``P(step correct)`` at the step's separator
with binary cross-entropy. No human labels: the checker is the teacher, as in
Math-Shepherd's automatic process supervision, with an exact checker instead of rollouts.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rlx.batch import Batch
from rlx.distributed import sample_seed
from rlx.environment import TextEnvironment
from rlx.errors import UsageError
from rlx.objective import Objective
from rlx.plugins.shared import scorers
from rlx.policy import LMPolicy, Policy, unwrap


def has_step_checker(env: Any) -> bool:
    checker = getattr(type(env), "check_steps", None)
    return checker is not None and checker is not TextEnvironment.check_steps


class PRMTraining(Objective):

    def __init__(self, config: Any, *, env: Any = None, max_new_tokens: int = 48, **kwargs: Any):
        super().__init__(config)
        if env is not None and not has_step_checker(env):
            raise UsageError(f"objective 'prm-train' needs an environment with a step checker to label steps "
                             f"('{type(env).__name__}' has none); use --env arithmetic")
        self.max_new_tokens = max_new_tokens
        self.sampler: Any = None
        self._device = torch.device("cpu")
        self._held_out: tuple[list[str], list[str], list[list[int]], list[list[bool]], list[bool]] | None = None

    def setup(self, policy: Policy) -> None:
        if not isinstance(policy, LMPolicy):
            raise UsageError("objective 'prm-train' needs a transformers policy (--policy tiny or hf)")
        self.sampler = policy.reference()  # the policy the PRM will judge, frozen as it starts
        if self.config.head == "implicit":  # the sampler doubles as the reference of the log-ratio
            setattr(unwrap(policy.model).config, scorers.IMPLICIT, self.config.beta)
        else:
            policy.model = scorers.classifier_from_lm(policy.model, policy.tokenizer, "token")

    # -- data -------------------------------------------------------------------------
    def _completions(self, env: Any, tasks: list[dict[str, Any]], seeds: list[int], k: int,
                     rng: random.Random) -> tuple[list[int], list[str], list[bool]]:
        """Rows as (task index, completion, sampled?): k samples per task, then gold and flawed."""
        rows: list[tuple[int, str, bool]] = []
        if k:
            self.sampler.model.to(self._device)
            prompts = [t["prompt"] for t in tasks for _ in range(k)]
            out = self.sampler.generate(prompts, max_new_tokens=self.max_new_tokens,
                                        temperature=self.config.temperature,
                                        seeds=[sample_seed(s, 0, j) for s in seeds for j in range(k)])
            rows += [(i // k, c, True) for i, c in enumerate(out.meta["completion"])]
        for i, t in enumerate(tasks):
            if self.config.gold and "solution" in t:
                rows.append((i, env.demonstration(t), False))
            if self.config.flawed and "expr" in t:
                from rlx.plugins.arithmetic.problems import FLAWS, flawed_solution

                rows.append((i, flawed_solution(t, rng, FLAWS), False))
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def _encode(self, policy: Policy, env: Any, tasks: list[dict[str, Any]], of_task: list[int],
                texts: list[str]) -> tuple[scorers.Encoded, torch.Tensor, torch.Tensor]:
        """The encoded rows and, per position, the step label (1 right, 0 wrong) and
        whether a step separator is there."""
        model = unwrap(policy.model)
        prompts = [tasks[i]["prompt"] for i in of_task]
        enc = scorers.encode(policy.tokenizer, prompts, texts, scorers.max_positions(model))
        labels = torch.zeros(enc.input_ids.shape)
        where = torch.zeros(enc.input_ids.shape, dtype=torch.bool)
        for r, (i, text) in enumerate(zip(of_task, texts)):
            verdicts = env.check_steps(tasks[i], text) or []
            for pos, v in zip(enc.separators(r, [v.end for v in verdicts]), verdicts):
                labels[r, pos], where[r, pos] = float(v.correct), True
        device = next(model.parameters()).device
        return enc.to(device), labels.to(device), where.to(device)

    def make_batch(self, env: Any, policy: Policy, tasks: list[dict[str, Any]], *, seeds: list[int]) -> Batch:
        self._device = policy.device
        rng = random.Random(seeds[0] if seeds else 0)
        of_task, texts, _ = self._completions(env, tasks, seeds, self.config.samples_per_task, rng)
        enc, labels, where = self._encode(policy, env, tasks, of_task, texts)
        return Batch({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask,
                      "mask": enc.attention_mask.float(), "step_labels": labels, "step_mask": where,
                      "completion_mask": scorers.completion_mask(enc)},
                     {"of_task": of_task, "prompt": [tasks[i]["prompt"] for i in of_task], "completion": texts})

    # -- loss -------------------------------------------------------------------------
    def logits(self, model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor,
               completion_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]``: the PRM's logit that the step ending at each position is right."""
        if self.config.head == "classifier":
            return model(input_ids=ids, attention_mask=attn).logits[..., 0].float()
        with torch.no_grad():
            ref_lp = scorers.token_logps(self.sampler.model.to(ids.device), ids, attn)
        return scorers.implicit_q(scorers.token_logps(model, ids, attn), ref_lp, completion_mask, self.config.beta)

    def loss(self, policy: Policy, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = self.logits(policy.model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        where = batch["step_mask"]
        z, y = logits.float()[where], batch["step_labels"][where]
        loss = F.binary_cross_entropy_with_logits(z, y)
        with torch.no_grad():
            agree = ((z > 0).float() == y).float().mean()
        return loss, {"loss/bce": loss.detach(), "prm/step_agreement": agree, "prm/correct_rate": y.mean()}

    # -- held-out ---------------------------------------------------------------------
    @torch.no_grad()
    def held_out_metrics(self, env: Any, policy: Policy, reference: Policy | None, chunk: int = 128) -> dict[str, float]:
        """Agreement with the checker on every step of held-out completions (samples from
        the starting policy, gold and flawed solutions of held-out tasks), overall and on
        the sampled completions alone."""
        tasks = env.eval_tasks()
        if not tasks:
            return {}
        self._device = policy.device
        if self._held_out is None:  # drawn once, with fixed seeds, so every evaluation sees the same steps
            of_task, texts, sampled = self._completions(env, tasks, list(range(len(tasks))),
                                                        self.config.eval_samples, random.Random(0))
            self._held_out = (of_task, texts, sampled)
        of_task, texts, sampled = self._held_out
        model = unwrap(policy.model)
        was_training = model.training
        model.eval()
        hits = {True: [0, 0], False: [0, 0]}  # sampled? -> [agreeing steps, steps]
        for start in range(0, len(texts), chunk):
            sl = slice(start, start + chunk)
            enc, labels, where = self._encode(policy, env, tasks, of_task[sl], texts[sl])
            pred = self.logits(model, enc.input_ids, enc.attention_mask, scorers.completion_mask(enc)) > 0
            for r, is_sampled in enumerate(sampled[sl]):
                w = where[r]
                hits[is_sampled][0] += int((pred[r][w] == labels[r][w].bool()).sum())
                hits[is_sampled][1] += int(w.sum())
        model.train(was_training)
        agree, total = hits[True][0] + hits[False][0], hits[True][1] + hits[False][1]
        out = {"eval/step_agreement": agree / max(total, 1), "eval/steps": float(total)}
        if hits[True][1]:
            out["eval/step_agreement_sampled"] = hits[True][0] / hits[True][1]
        return out

    def save_alongside(self, folder: Path) -> None:
        if self.config.head == "implicit":  # the log-ratio's denominator travels with the PRM
            self.sampler.save(folder / "reference")
