"""DQN (Mnih et al. 2015), with the double-DQN target (van Hasselt et al. 2016) as an option.

How one training step of the loop maps onto DQN:

1. collect: ``ControlRollout`` steps ``env.num_envs`` copies for ``train_freq`` steps and
   acts through ``DQN.act``: epsilon-greedy over ``policy.q_values``, epsilon decaying
   linearly with the env steps taken so far (``linear_epsilon``).
2. prepare: the batch's transitions ``(obs, action, reward, next_obs, terminated)`` go
   into the replay buffer. The loop's frozen reference policy is the target network.
3. minibatches: once the buffer holds ``learning_starts`` transitions, ``gradient_steps``
   batches sampled uniformly from it, one optimizer step each (the loop's). After every
   ``target_update_interval`` optimizer steps the target moves toward the online network
   (a copy with ``tau=1``, Polyak averaging with ``tau<1``).
4. loss: Huber (or squared) TD error between ``Q(s, a)`` and ``td_target``, as one autograd
   node (``td_loss.py``).

The policy's greedy action (``act(deterministic=True)``, which evaluation uses) is the
argmax of the same head, so evaluation needs nothing DQN-specific.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any, Iterator

import torch
from torch import nn

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.objective import Objective
from rlx.policy import Policy, unwrap
from rlx.precision import flushing_denormals

from .td_loss import td_loss, td_loss_and_grad

TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "terminated")
# the most replay rows drawn at once for ``batched_targets`` (CartPole: all 128 x 64 of an
# update are 0.4 MB; 84 x 84 x 4 frames would be 230 MB, so they go in smaller blocks)
BLOCK_BYTES = 32 * 2 ** 20
# the target network runs over a drawn block this many rows at a time: in one pass over
# CartPole's 128 x 64 rows each [256, 256] layer writes an 8 MB activation, which the
# allocator maps fresh on every update (4,000 page faults, half of the pass's 35 ms,
# measured 2026-12-04); [512, 256] activations reuse their memory and stay in cache: 18 ms
TARGET_PASS_ROWS = 512
UNIFORM_POOL = 4096  # epsilon-greedy's random numbers are drawn this many at a time


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def linear_epsilon(start: float, end: float, fraction: float, progress: float) -> float:
    """Epsilon at ``progress`` (0..1 of the run): linear from ``start`` to ``end`` over the
    first ``fraction`` of the run, then ``end``."""
    if fraction <= 0:
        return end
    return start + (end - start) * min(1.0, max(0.0, progress) / fraction)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q_target: torch.Tensor, gamma: float,
              next_q_online: torch.Tensor | None = None) -> torch.Tensor:
    """``r + gamma * (1 - terminated) * Q_target(s', a')`` ``[B]``.

    ``a'`` is the target network's argmax, or with ``next_q_online`` (double DQN) the
    online network's. Only termination stops bootstrapping: a time-limit truncation's
    ``s'`` is its real last observation, whose value still counts."""
    if next_q_online is None:
        next_v = next_q_target.max(-1).values
    else:
        next_v = next_q_target.gather(-1, next_q_online.argmax(-1, keepdim=True)).squeeze(-1)
    return rewards + gamma * (1.0 - terminated.float()) * next_v


@torch.no_grad()
def update_target(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Move ``target``'s parameters toward ``online``'s in place: copy for ``tau == 1``,
    else ``target = (1 - tau) * target + tau * online``."""
    for t, o in zip(target.parameters(), online.parameters()):
        if tau >= 1.0:
            t.copy_(o)
        else:
            t.lerp_(o, tau)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)  # running statistics are not averaged


class ReplayBuffer:
    """A ring of the newest ``capacity`` transitions, stored where the first ones come from
    (the training device), with the shapes and dtypes of the first ``add``."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.data: dict[str, torch.Tensor] = {}
        self.pos = 0  # where the next transition goes
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **items: torch.Tensor) -> None:
        """Append ``[n, ...]`` tensors (one row per transition), overwriting the oldest."""
        n = next(iter(items.values())).shape[0]
        if n > self.capacity:  # only the newest would survive anyway
            items = {k: v[-self.capacity:] for k, v in items.items()}
            n = self.capacity
        if not self.data:
            self.data = {k: torch.zeros(self.capacity, *v.shape[1:], dtype=v.dtype, device=v.device)
                         for k, v in items.items()}
        if set(items) != set(self.data):
            raise ValueError(f"replay buffer holds {sorted(self.data)}, got {sorted(items)}")
        idx = (self.pos + torch.arange(n)) % self.capacity
        for k, v in items.items():
            buf = self.data[k]
            buf[idx.to(buf.device)] = v.to(buf.device, buf.dtype)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int) -> Batch:
        """``n`` transitions drawn uniformly with replacement."""
        if not self.size:
            raise ValueError("cannot sample from an empty replay buffer")
        device = next(iter(self.data.values())).device
        idx = torch.randint(self.size, (n,), device=device)
        return Batch({k: v[idx] for k, v in self.data.items()})


class DQN(Objective):

    def __init__(self, config: Any, **kwargs: Any):
        super().__init__(config)
        c = config
        if c.learning_starts > c.buffer_size:
            raise UsageError(f"objective.learning_starts ({c.learning_starts}) exceeds objective.buffer_size "
                             f"({c.buffer_size}), so DQN would never update; lower learning_starts or raise buffer_size")
        self.buffer = ReplayBuffer(c.buffer_size)
        self.online: Policy | None = None
        self.target: Policy | None = None  # the loop's reference policy, handed over in prepare
        self.total_steps = 0  # the loop's training steps in the whole run (begin_step)
        self.env_steps = 0  # transitions acted so far: drives epsilon
        self.grad_steps = 0
        self._sync_target = False
        self._checked = False
        self._pool: list[float] = []  # uniform draws for epsilon-greedy (``_uniforms``)
        self._drawn = 0
        self._worker: ThreadPoolExecutor | None = None  # for the target passes (_target_worker)
        self._zeros: torch.Tensor | None = None  # act's log-probs and values

    @property
    def rollout_length(self) -> int:
        return self.config.train_freq

    @property
    def needs_reference(self) -> bool:
        return True  # the reference policy is the target network

    def begin_step(self, step: int, total_steps: int) -> None:
        self.total_steps = total_steps

    def epsilon_at(self, env_steps: int, num_envs: int) -> float:
        c = self.config
        budget = self.total_steps * c.train_freq * num_envs
        return linear_epsilon(c.start_e, c.end_e, c.exploration_fraction, env_steps / budget if budget else 0.0)

    def setup(self, policy: Any) -> None:
        self._check(policy)  # before the run is recorded, where the loop calls setup

    def _check(self, policy: Any) -> None:
        from rlx.distributed import rank_world

        if not policy.discrete:
            raise UsageError("objective 'dqn' needs a discrete action space but this environment's actions are "
                             "continuous; use --objective ppo, or a discrete env such as --set env.id=CartPole-v1")
        if rank_world()[1] > 1:
            raise UsageError("objective 'dqn' runs in one process (its replay buffer and target network are per "
                             "process); drop --num-processes")
        self._checked = True

    @torch.no_grad()
    def act(self, policy: Any, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Epsilon-greedy actions for ``obs`` ``[N, ...]``; log-probs and values are zeros
        (nothing downstream uses them)."""
        if not self._checked:
            self._check(policy)
        n = obs.shape[0]
        q = policy.q_values(obs)
        actions = q.argmax(-1)
        epsilon = self.epsilon_at(self.env_steps, n)
        u = self._uniforms(2 * n)  # per copy: explore or not, then which action
        explore = [i for i in range(n) if u[i] < epsilon]
        if explore:
            # as a list and back: a tenth of an indexed write's cost on a few copies
            chosen = actions.tolist()
            for i in explore:
                chosen[i] = int(u[n + i] * q.shape[-1])  # u < 1, so int(u * A) < A: uniform over the A actions
            actions = torch.tensor(chosen, device=actions.device)
        self.env_steps += n
        if self._zeros is None or self._zeros.shape[0] != n or self._zeros.device != q.device:
            self._zeros = torch.zeros(n, device=q.device)  # never written: the rollout stacks copies
        return actions, self._zeros, self._zeros

    def _uniforms(self, n: int) -> list[float]:
        """``n`` uniform draws in [0, 1) from torch's generator, as Python floats, from a pool
        refilled ``UNIFORM_POOL`` at a time. Why: acting for one env copy, drawing them per
        step as tensors and picking with tensor ops took 50 us of a 250 us env step."""
        if self._drawn + n > len(self._pool):
            self._pool = self._pool[self._drawn:] + torch.rand(max(n, UNIFORM_POOL)).tolist()
            self._drawn = 0
        self._drawn += n
        return self._pool[self._drawn - n:self._drawn]

    def prepare(self, batch: Batch, policy: Policy, reference: Policy | None) -> dict[str, float]:
        self.online, self.target = policy, reference
        if self._sync_target and reference is not None:
            # a resumed run's target is a copy of the initial weights: restart it from the online network
            update_target(reference.model, unwrap(policy.model), 1.0)
            self._sync_target = False
        N, T = batch["actions"].shape[:2]
        # time-major, so the ring drops the oldest steps first
        self.buffer.add(**{k: batch[k].transpose(0, 1).reshape(N * T, *batch[k].shape[2:]) for k in TRANSITION_KEYS})
        return {"explore/epsilon": self.epsilon_at(self.env_steps, N), "buffer/size": float(len(self.buffer)),
                "dqn/grad_steps": float(self.grad_steps)}

    def minibatches(self, batch: Batch) -> Iterator[Batch]:
        c = self.config
        if len(self.buffer) < max(c.learning_starts, 1):
            return
        left = c.gradient_steps
        while left > 0:
            # the gradient steps up to the next target update all see the same target network
            k = min(left, c.target_update_interval - self.grad_steps % c.target_update_interval, self._block_cap())
            for mb in (self._drawn_together(k) if c.batched_targets and k > 1 and self.target is not None
                       else (self.buffer.sample(c.minibatch_size) for _ in range(k))):
                yield mb
                # resumed after the loop's optimizer step for that batch
                self.grad_steps += 1
                if self.grad_steps % c.target_update_interval == 0 and self.target is not None:
                    update_target(self.target.model, unwrap(self.online.model), c.tau)
            left -= k

    def _block_cap(self) -> int:
        """Gradient steps whose draws fit in ``BLOCK_BYTES`` (small observations: all of an update)."""
        per_row = sum(v[0].numel() * v.element_size() for v in self.buffer.data.values())
        return max(1, BLOCK_BYTES // max(1, per_row * self.config.minibatch_size))

    def _drawn_together(self, k: int) -> Iterator[Batch]:
        """``k`` minibatches from one draw of ``k x minibatch_size`` (the generator's stream is
        the same as ``k`` draws), each with ``next_q_target`` from the target network's passes
        over ``TARGET_PASS_ROWS`` at a time, and, without double DQN (whose target reads the
        online network as it trains), the TD targets themselves: elementwise, so the same
        values as per step, in 5 ops per pass instead of 5 per step. With a worker thread
        (``_target_worker``) the passes run on it, ahead of the gradient steps."""
        mb = self.config.minibatch_size
        drawn = self.buffer.sample(k * mb)
        per_pass = max(1, TARGET_PASS_ROWS // mb)  # whole minibatches per pass
        passes = [drawn.select(slice(s * mb, min(k, s + per_pass) * mb)) for s in range(0, k, per_pass)]
        worker = self._target_worker()
        pending = [worker.submit(self._with_targets, rows) for rows in passes] if worker else []
        try:
            for i, rows in enumerate(passes):
                if pending:
                    pending[i].result()
                else:
                    self._with_targets(rows)
                yield from rows.split(len(rows) // mb)
        finally:
            # a loop that stops early (a non-finite loss) closes this generator: no pass may
            # still read the target network when the next update changes it
            for job in pending:
                job.cancel()
            futures_wait(pending)

    def _with_targets(self, rows: Batch) -> None:
        """Adds ``next_q_target`` (and without double DQN ``td_target``) to ``rows``."""
        c = self.config
        with torch.no_grad():
            rows["next_q_target"] = self.target.q_values(rows["next_obs"])
            if not c.double_q:
                rows["td_target"] = td_target(rows["rewards"], rows["terminated"], rows["next_q_target"], c.gamma)

    def _target_worker(self) -> ThreadPoolExecutor | None:
        """A thread for the target passes (``overlap_targets``) when the replay buffer is on
        the CPU and torch leaves a core free, else None. Why: the passes are a tenth of a
        CartPole update's products and need nothing of the gradient steps, so on a free core
        they cost no time; a plain thread, not more torch threads, whose waits at every op
        make small products far slower when another job holds the second core. The thread
        copies the run's denormal flushing (per thread on x86)."""
        if not self.config.overlap_targets or next(iter(self.buffer.data.values())).device.type != "cpu":
            return None
        if self._worker is None:
            if torch.get_num_threads() >= usable_cores():
                return None
            flush = flushing_denormals()
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="rlx-dqn-targets",
                                              initializer=torch.set_flush_denormal, initargs=(flush,))
        return self._worker

    def loss(self, policy: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        c = self.config
        target = self._td_target(policy, batch)
        loss, q = td_loss(policy.q_values(batch["obs"]), batch["actions"], target, c.loss == "huber")
        return loss, self._metrics(loss, q, target)

    def gradients(self, policy: Any, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]] | None:
        """``loss``'s gradients through the policy's hand-written backward, where it has one
        (``q_values_with_backward``): no autograd graph for a step of a few hundred
        microseconds."""
        forward = policy.q_values_with_backward(batch["obs"])
        if forward is None:
            return None
        q_all, backward = forward
        target = self._td_target(policy, batch)
        loss, q, grad = td_loss_and_grad(q_all, batch["actions"], target, self.config.loss == "huber")
        backward(grad)
        return loss, self._metrics(loss, q, target)

    def _td_target(self, policy: Any, batch: Batch) -> torch.Tensor:
        """The batch's TD targets: drawn with it (``_drawn_together``), or computed here."""
        c = self.config
        if self.target is None:
            raise RuntimeError("DQN needs the target network; prepare() was not called")
        if "td_target" in batch:
            return batch["td_target"]
        with torch.no_grad():
            next_online = policy.q_values(batch["next_obs"]) if c.double_q else None
            next_q = batch["next_q_target"] if "next_q_target" in batch else self.target.q_values(batch["next_obs"])
            return td_target(batch["rewards"], batch["terminated"], next_q, c.gamma, next_online)

    @staticmethod
    def _metrics(loss: torch.Tensor, q: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
        # 0-d tensors: the loop averages them over the update's minibatches and reads them once
        return {"loss/td": loss.detach(), "q/mean": q.mean(), "q/target": target.mean()}

    def state_dict(self) -> dict[str, Any]:
        # the replay buffer is left out (up to buffer_size transitions): a resumed run refills it
        return {"env_steps": self.env_steps, "grad_steps": self.grad_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state.get("env_steps", 0))
        self.grad_steps = int(state.get("grad_steps", 0))
        self._sync_target = True
