"""gymnasium vector environments behind rlx's ControlEnvironment.

Episodes reset in the same step they end (gymnasium's SAME_STEP autoreset), so every
step's observation is one the policy acts on; the last observation of a truncated
episode is handed back so its value can be bootstrapped.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np
import torch

from rlx.environment import ControlEnvironment
from rlx.errors import UsageError


def _make_vector(env_id: str, n: int, mode: str, seed: int) -> Any:
    import gymnasium as gym

    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"env.id '{env_id}' is not a registered gymnasium environment; {hint}"
                         "install the package that provides it")
    cls = gym.vector.SyncVectorEnv if mode == "sync" else gym.vector.AsyncVectorEnv
    envs = cls([lambda: gym.make(env_id)] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return envs


class GymEnv(ControlEnvironment):
    kind = "control"

    def __init__(self, config: Any, *, seed: int = 0):
        super().__init__(config, seed=seed)
        self.num_envs = config.num_envs
        self.envs = _make_vector(config.id, config.num_envs, config.vectorization, seed)
        self.observation_space = self.envs.single_observation_space
        self.action_space = self.envs.single_action_space
        self.discrete = hasattr(self.action_space, "n")
        self._ret = np.zeros(self.num_envs)
        self._len = np.zeros(self.num_envs, dtype=np.int64)
        self._finished: list[tuple[float, int]] = []

    def reset(self) -> torch.Tensor:
        obs, _ = self.envs.reset(seed=self.seed)
        self._ret[:] = 0
        self._len[:] = 0
        return torch.as_tensor(obs, dtype=torch.float32)

    def _to_env(self, actions: torch.Tensor) -> np.ndarray:
        a = actions.detach().cpu().numpy()
        if self.discrete:
            return a.astype(np.int64)
        # the Gaussian is unbounded; the env gets the action clipped into its box
        return np.clip(a, self.action_space.low, self.action_space.high)

    def step(self, actions: torch.Tensor) -> tuple[Any, Any, Any, Any, dict[int, Any]]:
        obs, reward, term, trunc, info = self.envs.step(self._to_env(actions))
        self._ret += reward
        self._len += 1
        done = term | trunc
        for i in np.flatnonzero(done):
            self._finished.append((float(self._ret[i]), int(self._len[i])))
            self._ret[i], self._len[i] = 0.0, 0
        final = {}
        if trunc.any():
            for i in np.flatnonzero(trunc):
                final[int(i)] = torch.as_tensor(info["final_obs"][i], dtype=torch.float32)
        return (torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(reward, dtype=torch.float32),
                torch.as_tensor(term), torch.as_tensor(trunc), final)

    def episode_stats(self) -> dict[str, float]:
        done, self._finished = self._finished, []
        if not done:
            return {}
        return {"episode/return": float(np.mean([r for r, _ in done])),
                "episode/length": float(np.mean([n for _, n in done])), "episode/count": float(len(done))}

    @torch.no_grad()
    def evaluate(self, policy: Any, episodes: int | None = None) -> dict[str, float]:
        episodes = episodes or self.config.eval_episodes
        n = min(episodes, 8)
        envs = _make_vector(self.config.id, n, "sync", self.seed)
        obs, _ = envs.reset(seed=self.seed + 10_000)
        ret, length = np.zeros(n), np.zeros(n, dtype=np.int64)
        results: list[tuple[float, int]] = []
        started = n  # episodes begun, so only `episodes` are counted
        active = np.ones(n, dtype=bool)
        device = next(policy.model.parameters()).device
        while active.any():
            a, _, _ = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic=True)
            obs, r, term, trunc, _ = envs.step(self._to_env(a))
            ret += r * active
            length += active
            for i in np.flatnonzero((term | trunc) & active):
                results.append((float(ret[i]), int(length[i])))
                ret[i], length[i] = 0.0, 0
                if started < episodes:
                    started += 1
                else:
                    active[i] = False
        envs.close()
        return {"eval/return": float(np.mean([r for r, _ in results])),
                "eval/length": float(np.mean([n for _, n in results]))}

    def close(self) -> None:
        self.envs.close()
