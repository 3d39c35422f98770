"""A saved MLP policy as an MLflow ``pyfunc`` model: observations in, the deterministic
actions out (the argmax of the logits, or the Gaussian's mean, unclipped).

The model's files are the folder ``MLPPolicy.save`` wrote (``model.pt`` and
``config.json``), copied as the artifact ``policy``; ``PolicyModel`` rebuilds the policy
from it, so loading needs rlx installed (no environment: the sizes are in config.json).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd  # at run time: MLflow resolves predict's annotations in this module

from rlx.policy import ModelTarget

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

    from .policy import MLPPolicy

FLAVOUR = "pyfunc"
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# wider observations get one tensor column: a column per value would bloat MLmodel and the UI
MAX_COLUMNS = 256


class PolicyModel(mlflow.pyfunc.PythonModel):
    """What ``mlflow.pyfunc.load_model`` returns for an mlp policy: ``predict`` takes
    observations ``[N, obs_dim]`` (a numpy array, a list of lists or a DataFrame) and
    returns the deterministic actions as a numpy array (``[N]`` indices, or ``[N, act_dim]``)."""

    def load_context(self, context: Any) -> None:
        from .policy import MLPPolicy

        self.policy = MLPPolicy.load(context.artifacts["policy"])

    # the annotation is one MLflow takes as is (DataFrame): the column signature below hands
    # predict a DataFrame whatever the caller passed, and a union would draw a warning
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        obs = torch.as_tensor(np.asarray(model_input, dtype=np.float32)).reshape(-1, self.policy.obs_dim)
        with torch.no_grad():
            actions, _, _ = self.policy.act(obs, deterministic=True)
        return actions.numpy()


def signature(policy: MLPPolicy) -> ModelSignature:
    """Unnamed double columns, one per observation value, rather than a float32 tensor:
    MLflow checks a tensor's dtype exactly, so float64 arrays, lists and DataFrames would
    be refused; columns take all of them (float32 included)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    if policy.obs_dim <= MAX_COLUMNS:
        inputs = Schema([ColSpec("double") for _ in range(policy.obs_dim)])
    else:
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, policy.obs_dim))])
    out = TensorSpec(np.dtype(np.int64), (-1,)) if policy.discrete else \
        TensorSpec(np.dtype(np.float32), (-1, policy.act_dim))
    return ModelSignature(inputs, Schema([out]))


def requirements() -> list[str]:
    """Pinned to what wrote the model; explicit because MLflow's inference of them loads
    the model again in a subprocess (seconds)."""
    import torch

    return [f"rlx=={metadata.version('rlx')}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}"]


@contextmanager
def quiet() -> Iterator[None]:
    """No "Downloading artifacts" bar (MLflow copies the saved folder with one) and no
    warning that ``python_model`` is pickled: ``PolicyModel`` pickles by reference to its
    class, which rlx provides, and holds no state until ``load_context``. Restored after."""
    log = logging.getLogger("mlflow.pyfunc")
    level, bar = log.level, os.environ.get(_PROGRESS_BAR)
    log.setLevel(logging.ERROR)
    os.environ[_PROGRESS_BAR] = "false"  # MLflow reads it at each copy
    try:
        yield
    finally:
        log.setLevel(level)
        if bar is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = bar


def log(saved: str | Path, target: ModelTarget, policy: MLPPolicy) -> str:
    """Log the policy ``policy.save`` wrote to ``saved`` as ``target``; returns the flavour."""
    from mlflow.models import Model

    dtype = np.float64 if policy.obs_dim <= MAX_COLUMNS else np.float32
    with quiet():
        # Model.log rather than mlflow.pyfunc.log_model, which takes no run_id: with it
        # the model is listed among the run's outputs, as the transformers flavour's is
        Model.log(artifact_path=None, name=target.name, flavor=mlflow.pyfunc, python_model=PolicyModel(),
                  artifacts={"policy": str(saved)}, model_id=target.model_id, run_id=target.run_id, step=target.step,
                  signature=signature(policy), input_example=np.zeros((1, policy.obs_dim), dtype),
                  pip_requirements=requirements())
    return FLAVOUR
