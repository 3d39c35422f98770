"""What the ``*_vs_sb3`` benchmarks time on the stable-baselines3 side: training time with
the evaluations taken out, and the training time at which the greedy policy first scored
>= 475 over 10 episodes, evaluated every ``every`` rollouts (updates)."""

from __future__ import annotations

import time
from typing import Any


def solve_timer(eval_env: Any, every: int) -> Any:
    """A callback for ``model.learn``: ``.start()`` right before it; then ``.paused`` (s spent
    evaluating) and ``.solved_at`` (training s to 475, or None)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    class SolveTimer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.paused, self.updates, self.solved_at, self.t0 = 0.0, 0, None, 0.0

        def start(self) -> None:
            self.t0 = time.perf_counter()

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            self.updates += 1
            if self.solved_at is None and self.updates % every == 0:
                t = time.perf_counter()
                mean, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=10, deterministic=True)
                self.paused += time.perf_counter() - t
                if mean >= 475:
                    self.solved_at = time.perf_counter() - self.t0 - self.paused

    return SolveTimer()
