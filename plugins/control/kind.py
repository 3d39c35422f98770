"""The ``control`` kind: ``num_envs`` copies of an environment stepped in lockstep by the
objective's behaviour policy (``Objective.act``, by default the policy's own ``act``),
``rollout_length`` steps per loop step, the observations carried from one batch to the next.

Batch keys, all ``[N, T]`` (N = ``num_envs``, T = ``rollout_length``) unless noted:
``obs`` and ``next_obs`` ``[N, T, ...]`` (the observation each step led to: for a
truncated episode its last one, not the reset), ``actions``, ``old_logp``, ``values``,
``env_reward``, ``dones`` (terminated or truncated), ``terminated``, ``trunc_value`` (V of a
truncated episode's last observation), ``next_value`` ``[N]``, ``mask`` (all ones).
"""

from __future__ import annotations

from typing import Any

import torch

from rlx.batch import Batch
from rlx.environment import ControlEnvironment
from rlx.kind import EnvironmentKind, Evaluation, KindContext
from rlx.policy import ControlPolicy


class ControlKind(EnvironmentKind):
    small_steps = True

    def __init__(self, config: Any = None, *, context: KindContext):
        super().__init__(config, context=context)
        self.expect(ControlEnvironment, ControlPolicy)
        self.rollout = ControlRollout(self.env, self.policy, self.objective.rollout_length, self.objective.act)

    def total_steps(self) -> int:
        """``run.env_steps`` (when set) in loop steps of ``num_envs * rollout_length``."""
        run = self.context.cfg.run
        per_step = self.env.num_envs * self.objective.rollout_length
        return -(-run.env_steps // per_step) if run.env_steps else run.steps

    def collect(self, step: int) -> Batch:
        return self.rollout.collect()

    def evaluate(self) -> Evaluation:
        return Evaluation(self.env.eval_episodes(self.policy))

    def step_metrics(self, batch: Batch, seconds: float) -> dict[str, float]:
        metrics = {"perf/env_steps_per_s": float(batch["mask"].numel()) / seconds,
                   "env/steps": float(self.rollout.env_steps)}
        metrics.update(self.env.episode_stats())
        return metrics


class ControlRollout:
    """Steps a vectorized environment with ``act``, ``length`` steps per copy, carrying
    the current observations from one batch to the next. ``act(policy, obs)`` returns
    actions, their log-probs and values, as ``ControlPolicy.act``."""

    def __init__(self, env: ControlEnvironment, policy: ControlPolicy, length: int, act: Any):
        self.env, self.policy, self.length, self.act = env, policy, length, act
        self.obs = env.reset()
        self.env_steps = 0

    @torch.no_grad()
    def collect(self) -> Batch:
        env, policy, act, T = self.env, self.policy, self.act, self.length
        N = env.num_envs
        device = next(policy.model.parameters()).device
        # per-step results go into lists, stacked once at the end: cheaper than T indexed writes per key
        obs_l, act_l, logp_l, val_l, rew_l, term_l, trunc_l = [], [], [], [], [], [], []
        finals: dict[tuple[int, int], torch.Tensor] = {}
        obs = self.obs.to(device)
        for t in range(T):
            obs_l.append(obs)
            a, logp, v = act(policy, obs)
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
