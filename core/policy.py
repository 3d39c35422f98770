"""Policy: acts, scores given actions, and saves itself.

An LM policy generates completions for prompts and returns per-token log-probs of given
completions; a control policy samples actions for observations. Both expose the
trainable ``model`` (an ``nn.Module``) that the loop hands to accelerate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from rlx.batch import Batch


_WRAPPERS: tuple[type, ...] | None = None


@dataclass(frozen=True)
class ModelTarget:
    """Where ``Policy.log_model`` writes: an MLflow model (MLflow 3's LoggedModel) that the
    loop created in the run's experiment, linked to the run. MLflow's tracking URI is set
    to the run's store while ``log_model`` runs, so ``mlflow.<flavour>.log_model(...,
    model_id=target.model_id)`` lands there."""

    model_id: str  # load it back with mlflow.<flavour>.load_model(f"models:/{model_id}")
    run_id: str  # the MLflow run
    name: str  # "policy" or "reward_model": the model's name on the run page
    tracking_uri: str
    step: int = 0  # the run's last step: pass it as log_model(step=...), so the model shows the final metrics


def unwrap(model: "torch.nn.Module") -> "torch.nn.Module":
    """The module inside a DDP, DataParallel or FSDP wrapper (what accelerate's ``prepare``
    returns on several processes), else the model itself. Not ``getattr(model, "module",
    model)``: on a plain module that raises and catches an AttributeError, which costs
    microseconds, thousands of times a second in a control run."""
    global _WRAPPERS
    if _WRAPPERS is None:
        from torch.nn import DataParallel
        from torch.nn.parallel import DistributedDataParallel

        _WRAPPERS = (DistributedDataParallel, DataParallel)
    if isinstance(model, _WRAPPERS):
        return model.module
    inner = model._modules.get("module")
    if inner is not None:
        return inner
    # FSDP keeps the module under another name and exposes it as a property
    return model.module if isinstance(getattr(type(model), "module", None), property) else model


class Policy(ABC):
    """Any policy. Its registration names the interface it implements (``interface="lm"``
    for ``LMPolicy``, ``"control"`` for ``ControlPolicy``, or one a kind plugin defines),
    which environment kinds check before anything is built."""

    model: "torch.nn.Module"  # what the optimizer trains; accelerate wraps it

    def __init__(self, config: BaseModel, **kwargs: Any):
        self.config = config

    @abstractmethod
    def log_probs(self, batch: "Batch", *, entropy: bool = False) -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """Per-position log-probs ``[B, T]`` of ``batch['actions']`` under this policy, and
        the per-position entropy when asked (else None). The entropy is for logging: it may
        carry no gradient (the built-in LM policies compute it without one), so an entropy
        bonus needs a policy that documents one."""

    def reference(self) -> "Policy":
        """A frozen copy (no gradients, eval mode) for KL penalties and as a target: by
        default a shallow copy of this policy holding a deep copy of ``model``. Override
        when the policy holds other state that must not be shared."""
        import copy

        ref = copy.copy(self)
        ref.model = copy.deepcopy(unwrap(self.model)).eval().requires_grad_(False)
        return ref

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the policy so that its native library can load it back."""

    def log_model(self, saved: Path, target: ModelTarget) -> str:
        """Log the policy that ``save`` just wrote to ``saved`` as the MLflow model
        ``target``, in the flavour of its native library (``mlflow.transformers`` for a
        transformers LM, ``mlflow.pyfunc`` or ``mlflow.pytorch`` for a network), so that
        ``mlflow.<flavour>.load_model(f"models:/{target.model_id}")`` loads it without
        rlx's loop. Pass explicit ``pip_requirements``: MLflow's inference of them imports
        the model in a subprocess (seconds). Returns the flavour's name. The default logs
        nothing and returns "" (the run page then shows the files under ``policy/`` only)."""
        return ""


class LMPolicy(Policy):
    """A language-model policy (registered with ``interface="lm"``)."""

    tokenizer: Any  # the transformers tokenizer of ``model``: reward-model trainers encode with it

    @property
    def device(self) -> "torch.device":
        """Where ``model``'s parameters are."""
        return next(self.model.parameters()).device

    @abstractmethod
    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0,
                 greedy: bool = False, min_new_tokens: int = 0, seeds: list[int] | None = None) -> "Batch":
        """Complete each prompt once; returns ``input_ids``, ``attention_mask``, ``actions``,
        ``mask`` and meta ``prompt``, ``completion``, ``token_ends``. With ``seeds`` (one per
        prompt) a completion must depend only on its prompt, seed and the weights, so runs
        split across processes or resumed from a checkpoint sample the same text."""

    @abstractmethod
    def encode(self, prompts: list[str], completions: list[str]) -> "Batch":
        """Teacher-forcing batch of given completions, same keys as ``generate``."""

    def add_value_head(self) -> None:
        """Give ``model`` a trainable scalar head on its last hidden state (actor-critic
        objectives such as ppo call this before training)."""
        from rlx.errors import UsageError

        raise UsageError(f"policy '{type(self).__name__}' has no value head, which actor-critic objectives need; "
                         "choose a policy that has one, or an objective without a critic (see `rlx plugins list`)")

    def evaluate_actions(self, batch: "Batch", *, entropy: bool = True
                         ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Per-token log-probs, entropies and values ``[B, T]`` (after ``add_value_head``);
        the same contract as a control policy's, so one ppo serves both."""
        raise NotImplementedError(f"{type(self).__name__} has no value head")


class ControlPolicy(Policy):
    """A policy over observations, an MLP for classic control (``interface="control"``)."""

    @abstractmethod
    def act(self, obs: "torch.Tensor", *, deterministic: bool = False
            ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Actions, their log-probs and the value estimates for ``obs`` ``[N, ...]``."""

    @abstractmethod
    def value(self, obs: "torch.Tensor") -> "torch.Tensor":
        """Value estimates ``[N]``."""

    discrete: bool = True  # actions are indices into a finite set (value-based objectives need it)

    def q_values(self, obs: "torch.Tensor") -> "torch.Tensor":
        """Action values ``[N, A]`` for discrete actions (what dqn learns)."""
        from rlx.errors import UsageError

        raise UsageError(f"policy '{type(self).__name__}' has no Q-values, which value-based objectives need; "
                         "choose a control policy that has them (see `rlx plugins list`)")

    def q_values_with_backward(self, obs: "torch.Tensor"
                               ) -> tuple["torch.Tensor", Callable[["torch.Tensor"], None]] | None:
        """``q_values(obs)`` computed without autograd, with the function that takes the
        loss's gradient at those Q-values and adds the parameters' gradients to their
        ``.grad`` (as ``backward`` would); or None (the default) where the policy has no
        such path, and the objective goes through ``q_values`` and autograd. For
        ``Objective.gradients``."""
        return None

    @abstractmethod
    def evaluate_actions(self, batch: "Batch", *, entropy: bool = True
                         ) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """Log-probs, entropies and values ``[B, T]`` of ``batch['actions']`` at ``batch['obs']``.
        ``entropy=False``: the loss will not use the entropies, so they may come without a
        gradient (cheaper); they are still returned, for logging."""

    def log_probs(self, batch: "Batch", *, entropy: bool = False) -> tuple["torch.Tensor", "torch.Tensor | None"]:
        logp, ent, _ = self.evaluate_actions(batch)
        return logp, ent if entropy else None
