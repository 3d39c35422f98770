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

from rlx.environment import ControlEnvironment, DatasetInfo, digest_of
from rlx.errors import UsageError

from .vector import SyncVector

_EVAL_SEED_OFFSET = 10_000  # evaluation copies reset with seed + this: episodes training never starts from


def _make_vector(env_id: str, n: int, mode: str, seed: int) -> Any:
    import gymnasium as gym

    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"env.id '{env_id}' is not a registered gymnasium environment; {hint}"
                         "install the package that provides it")
    fns = [lambda: gym.make(env_id)] * n
    if mode == "sync":
        return SyncVector(fns)
    return gym.vector.AsyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class RunningMeanStd:
    """Mean and variance of a stream of batches, merged with Chan et al.'s parallel formula."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4  # a pseudo-count, so the first batch is not divided by zero

    def update(self, x: np.ndarray) -> None:
        n = x.shape[0]
        b_mean, b_var = x.mean(0), x.var(0)
        delta, total = b_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var = np.asarray(state["mean"]), np.asarray(state["var"])
        self.count = state["count"]


class GymEnv(ControlEnvironment):

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
        self.obs_rms = RunningMeanStd(self.observation_space.shape) if config.normalize_obs else None
        self.ret_rms = RunningMeanStd() if config.normalize_reward else None
        self._disc_ret = np.zeros(self.num_envs)

    def _obs(self, obs: np.ndarray, update: bool = True) -> torch.Tensor:
        if self.obs_rms is not None:
            if update:
                self.obs_rms.update(obs)
            c = self.config.clip_obs
            obs = np.clip((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8), -c, c)
        # from_numpy: a third of as_tensor's cost, paid on every env step (as_tensor shares the
        # memory of a float32 array as well)
        return torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))

    def _reward(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        if self.ret_rms is None:
            return reward
        # scale by the spread of the discounted return, not of the reward (as SB3's VecNormalize)
        self._disc_ret = self._disc_ret * self.config.gamma + reward
        self.ret_rms.update(self._disc_ret)
        self._disc_ret[done] = 0.0
        c = self.config.clip_reward
        return np.clip(reward / np.sqrt(self.ret_rms.var + 1e-8), -c, c)

    def reset(self) -> torch.Tensor:
        obs, _ = self.envs.reset(seed=self.seed)
        self._ret[:] = 0
        self._len[:] = 0
        self._disc_ret[:] = 0
        return self._obs(obs)

    def _to_env(self, actions: torch.Tensor) -> np.ndarray:
        a = actions.detach().cpu().numpy()
        if self.discrete:
            return a if a.dtype == np.int64 else a.astype(np.int64)
        # the Gaussian is unbounded; the env gets the action clipped into its box
        return np.clip(a, self.action_space.low, self.action_space.high)

    def step(self, actions: torch.Tensor) -> tuple[Any, Any, Any, Any, dict[int, Any]]:
        obs, reward, term, trunc, info = self.envs.step(self._to_env(actions))
        self._ret += reward
        self._len += 1
        done = term | trunc
        final = {}
        if done.any():  # one check on most steps instead of two searches
            for i in np.flatnonzero(done):
                self._finished.append((float(self._ret[i]), int(self._len[i])))
                self._ret[i], self._len[i] = 0.0, 0
            for i in np.flatnonzero(trunc):
                final[int(i)] = self._obs(info["final_obs"][i][None], update=False)[0]
        return (self._obs(obs), torch.from_numpy(self._reward(reward, done).astype(np.float32)),
                torch.from_numpy(np.asarray(term, dtype=bool)), torch.from_numpy(np.asarray(trunc, dtype=bool)), final)

    def state_dict(self) -> dict[str, Any]:
        return {k: rms.state_dict() for k, rms in (("obs_rms", self.obs_rms), ("ret_rms", self.ret_rms)) if rms}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("obs_rms", "ret_rms"):
            if k in state and getattr(self, k) is not None:
                getattr(self, k).load_state_dict(state[k])

    def datasets(self) -> list[DatasetInfo]:
        """The simulator as the run's data: training episodes, identified by the env id,
        the settings that shape what the objective sees and the run seed (the episodes'
        start states follow it), and the evaluation episodes, by the id and their seed."""
        c = self.config
        settings = c.model_dump(exclude={"eval_episodes"})
        source = f"gymnasium:{c.id}"
        eval_seed = self.seed + _EVAL_SEED_OFFSET
        return [
            DatasetInfo(name=f"{c.id}-episodes", context="training", digest=digest_of(c.id, settings, self.seed),
                        source=source, source_type="simulator", columns=("return", "length"), settings=settings),
            DatasetInfo(name=f"{c.id}-eval-episodes", context="evaluation",
                        digest=digest_of(c.id, c.eval_episodes, eval_seed), source=source, source_type="simulator",
                        rows=c.eval_episodes, columns=("return", "length"),
                        settings={"id": c.id, "eval_episodes": c.eval_episodes, "seed": eval_seed}),
        ]

    def episode_stats(self) -> dict[str, float]:
        done, self._finished = self._finished, []
        if not done:
            return {}
        return {"episode/return": float(np.mean([r for r, _ in done])),
                "episode/length": float(np.mean([n for _, n in done])), "episode/count": float(len(done))}

    @torch.no_grad()
    def eval_episodes(self, policy: Any) -> dict[str, float]:
        episodes = self.config.eval_episodes
        n = min(episodes, 8)
        envs = _make_vector(self.config.id, n, "sync", self.seed)
        obs, _ = envs.reset(seed=self.seed + _EVAL_SEED_OFFSET)
        ret, length = np.zeros(n), np.zeros(n, dtype=np.int64)
        results: list[tuple[float, int]] = []
        started = n  # episodes begun, so only `episodes` are counted
        active = np.ones(n, dtype=bool)
        device = next(policy.model.parameters()).device
        while active.any():
            a, _, _ = policy.act(self._obs(obs, update=False).to(device), deterministic=True)
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
