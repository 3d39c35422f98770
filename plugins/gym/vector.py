"""N copies of a gymnasium environment stepped in a loop in this process.

gymnasium's SyncVectorEnv does the same with general machinery (space iteration,
batched info dicts, copies): measured here, 69 us per step of 8 CartPoles against 60 us
for this loop, 13% of the environment's share of a PPO update. Only what rlx reads is
kept: stacked observations, rewards, terminated and truncated flags, and each finished
episode's last observation. Episodes reset in the step they end (same-step autoreset).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


class SyncVector:
    def __init__(self, env_fns: list[Callable[[], Any]]):
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        # Discrete actions go to the env as Python ints: the cheapest type its checks accept
        self._discrete = hasattr(self.single_action_space, "n")

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Copy i is seeded with ``seed + i`` (as gymnasium's vector envs)."""
        obs = [env.reset(seed=None if seed is None else seed + i)[0] for i, env in enumerate(self.envs)]
        return np.stack(obs), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        acts = actions.tolist() if self._discrete else actions
        obs: list[Any] = [None] * n
        rewards = np.empty(n)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        final: list[Any] = [None] * n
        for i, env in enumerate(self.envs):
            o, r, te, tr, _ = env.step(acts[i])
            rewards[i] = r
            if te or tr:
                term[i], trunc[i] = te, tr
                final[i] = o
                o, _ = env.reset()
            obs[i] = o
        return np.stack(obs), rewards, term, trunc, {"final_obs": final}

    def close(self) -> None:
        for env in self.envs:
            env.close()
