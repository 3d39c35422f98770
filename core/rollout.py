"""Turning tasks into batches: rollouts from the policy, demonstrations from the
environment, and greedy evaluation on the held-out split."""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.distributed import rank_world, sample_seed
from rlx.environment import Environment, Task
from rlx.errors import RlxError


def collect(env: Environment, policy: Any, objective: Any, n_tasks: int, *, max_new_tokens: int,
            temperature: float, min_new_tokens: int = 0, seed: int = 0, step: int = 0) -> Batch:
    """One training batch: ``n_tasks`` tasks per process, ``objective.group_size`` samples each.

    Every rank draws the same global task list and keeps its slice; sample ``i`` of the
    global batch is drawn with its own seed, so the split across ranks changes nothing."""
    rank, world = rank_world()
    tasks = env.sample(n_tasks * world)[rank * n_tasks:(rank + 1) * n_tasks]
    if len(tasks) < n_tasks:
        raise RlxError(f"environment '{type(env).__name__}' gave {len(tasks)} tasks where {n_tasks} were asked for "
                       "(an empty or exhausted dataset?); check its data or lower run.batch_size")
    first_group = rank * n_tasks
    if objective.data == "demonstrations":
        batch = policy.encode([t["prompt"] for t in tasks], [env.demonstration(t) for t in tasks])
        group = [first_group + i for i in range(len(tasks))]
    elif objective.data == "own":
        seeds = [sample_seed(seed, step, first_group + i) for i in range(len(tasks))]
        batch = objective.make_batch(env, policy, tasks, seeds=seeds)
        # rows may be several per task: ``meta["of_task"]`` says which task each row is from
        of_task = batch.meta.pop("of_task", list(range(len(tasks))))
        group = [first_group + i for i in of_task]
        tasks = [tasks[i] for i in of_task]
    elif objective.data == "preferences":
        batch = encode_pairs(policy, tasks)
        tasks = batch.meta["task"]
        group = [first_group + i % n_tasks for i in range(len(tasks))]
    else:
        g = objective.group_size
        tasks = [t for t in tasks for _ in range(g)]
        group = [first_group + i // g for i in range(len(tasks))]
        seeds = [sample_seed(seed, step, first_group * g + i) for i in range(len(tasks))]
        batch = policy.generate([t["prompt"] for t in tasks], max_new_tokens=max_new_tokens,
                                temperature=temperature, min_new_tokens=min_new_tokens, seeds=seeds)
    batch.meta["task"] = tasks
    batch["group"] = torch.tensor(group, device=batch["mask"].device)
    return batch


def encode_pairs(policy: Any, pairs: list[Task]) -> Batch:
    """Preference pairs as ``2n`` rows: each prompt with its ``chosen`` completion, then
    each with its ``rejected`` one; ``meta["task"]`` names the pair of every row."""
    prompts = [p["prompt"] for p in pairs]
    batch = policy.encode(prompts + prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs])
    batch.meta["task"] = list(pairs) + list(pairs)
    return batch


def evaluate(env: Any, policy: Any, *, max_new_tokens: int, chunk: int = 256,
             keep: int = 8) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Greedy accuracy on the held-out split, and the first ``keep`` generations."""
    tasks: list[Task] = env.eval_tasks()
    if not tasks:
        raise RlxError(f"environment '{type(env).__name__}' has an empty held-out split; check its data or eval_size")
    correct = 0
    rows: list[dict[str, Any]] = []
    lengths = 0.0
    for start in range(0, len(tasks), chunk):
        part = tasks[start:start + chunk]
        batch = policy.generate([t["prompt"] for t in part], max_new_tokens=max_new_tokens, greedy=True)
        lengths += float(batch["mask"].sum())
        for t, text in zip(part, batch.meta["completion"]):
            ok = env.is_correct(t, text)
            correct += ok
            if len(rows) < keep:
                rows.append({"prompt": t["prompt"], "completion": text, "correct": bool(ok)})
    n = max(len(tasks), 1)
    return {"eval/accuracy": correct / n, "eval/completion_length": lengths / n}, rows


class ControlRollout:
    """Steps a vectorized control environment with the policy, ``length`` steps per copy,
    carrying the current observations from one batch to the next.

    ``act`` replaces ``policy.act`` as the behaviour policy when an objective explores
    its own way (DQN's epsilon-greedy); it has the same signature and returns."""

    def __init__(self, env: Any, policy: Any, length: int, act: Any = None):
        self.env, self.policy, self.length = env, policy, length
        self.act = act or policy.act
        self.obs = env.reset()
        self.env_steps = 0

    @torch.no_grad()
    def collect(self) -> Batch:
        """``[N, T]`` tensors: ``obs``, ``next_obs`` (the observation each step led to; the
        last one of a truncated episode, not the reset), ``actions``, ``old_logp``,
        ``values``, ``env_reward``, ``dones`` (terminated or truncated), ``terminated``,
        ``trunc_value`` (V of a truncated episode's last observation), ``next_value`` [N]."""
        env, policy, T = self.env, self.policy, self.length
        N = env.num_envs
        device = next(policy.model.parameters()).device
        # per-step results go into lists, stacked once at the end: cheaper than T indexed writes per key
        obs_l, act_l, logp_l, val_l, rew_l, term_l, trunc_l = [], [], [], [], [], [], []
        finals: dict[tuple[int, int], torch.Tensor] = {}
        obs = self.obs.to(device)
        for t in range(T):
            obs_l.append(obs)
            a, logp, v = self.act(obs)
            next_obs, r, term, trunc, final = env.step(a)
            act_l.append(a)
            logp_l.append(logp)
            val_l.append(v)
            rew_l.append(r)
            term_l.append(term)
            trunc_l.append(trunc)
            finals.update({(i, t): o for i, o in final.items()})
            obs = next_obs.to(device)
        self.obs = obs
        self.env_steps += N * T
        obs_buf = torch.stack(obs_l + [obs], 1)
        next_obs = obs_buf[:, 1:]
        trunc_value = torch.zeros(N, T, device=device)
        if finals:  # bootstrap truncated episodes from their last observation, not the reset one
            next_obs = next_obs.clone()
            (rows, cols), last = zip(*finals), torch.stack(list(finals.values())).to(device)
            next_obs[list(rows), list(cols)] = last
            trunc_value[list(rows), list(cols)] = policy.value(last)
        terms = torch.stack(term_l, 1).to(device)
        return Batch({"obs": obs_buf[:, :T], "next_obs": next_obs, "actions": torch.stack(act_l, 1),
                      "old_logp": torch.stack(logp_l, 1), "values": torch.stack(val_l, 1),
                      "env_reward": torch.stack(rew_l, 1).to(device),
                      "dones": (terms | torch.stack(trunc_l, 1).to(device)).float(), "terminated": terms.float(),
                      "trunc_value": trunc_value, "next_value": policy.value(obs), "mask": torch.ones(N, T, device=device)})
