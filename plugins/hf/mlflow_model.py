"""A saved transformers model as an MLflow model in the ``transformers`` flavour.

The model is read back from the folder ``save`` wrote, not taken from the training policy:
that one may carry a value head (``rlx_value_head``) and DDP or FSDP wrappers, which a
user's ``mlflow.transformers.load_model`` must not see. A local folder cannot be passed
as is: with transformers 5.24, MLflow's local-checkpoint path raises an AttributeError
(``build_flavor_config_from_local_checkpoint``), so the model goes in as loaded objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlx.policy import ModelTarget

FLAVOUR = "transformers"

# the class name's ending in config.json -> (the Auto class that loads it, MLflow's task)
HEADS: dict[str, tuple[str, str]] = {
    "ForCausalLM": ("AutoModelForCausalLM", "text-generation"),
    "ForSequenceClassification": ("AutoModelForSequenceClassification", "text-classification"),  # rm head=classifier
    "ForTokenClassification": ("AutoModelForTokenClassification", "token-classification"),  # prm-train head=classifier
}


def head_of(saved: Path) -> tuple[str, str, str]:
    """The saved model's architecture, the Auto class that loads it and its MLflow task.
    An architecture none of ``HEADS`` names is read as a causal LM, what a policy is."""
    config = json.loads((saved / "config.json").read_text())
    arch = (config.get("architectures") or ["a causal LM"])[0]
    for ending, (auto, task) in HEADS.items():
        if arch.endswith(ending):
            return arch, auto, task
    return arch, *HEADS["ForCausalLM"]


@contextmanager
def quiet() -> Iterator[None]:
    """No progress bars ("Loading weights", "Writing model shards") and no warnings from
    transformers or MLflow's transformers flavour, restored on the way out. MLflow warns
    that no model card or license was found on the hub: a model trained here has neither."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    flavour_log = logging.getLogger("mlflow.transformers")
    level = flavour_log.level
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    flavour_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        flavour_log.setLevel(level)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def model_card(target: ModelTarget, arch: str, task: str) -> Any:
    """What MLflow writes as ``model_card.md``. Given one, MLflow does not fetch the card
    from the hub by the model's name (here a local folder, never a hub id)."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="transformers", pipeline_tag=task, tags=["rlx"])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {target.name}\n\n"
                     f"A `{arch}` ({task}) trained by rlx, logged from MLflow run `{target.run_id}`.\n")


def requirements() -> list[str]:
    """Pinned to what wrote the model. Given explicitly because MLflow's inference of them
    loads the model again in a subprocess, which takes seconds."""
    import torch
    import transformers

    return [f"transformers=={transformers.__version__}", f"torch=={torch.__version__.split('+')[0]}"]


def log(saved: str | Path, target: ModelTarget, *, trust_remote_code: bool = False) -> str:
    """Log the model and tokenizer that ``save_pretrained`` wrote to ``saved`` as
    ``target`` (loadable with ``mlflow.transformers.load_model(f"models:/{model_id}")``);
    returns the flavour's name."""
    import mlflow.transformers
    import transformers
    from transformers import AutoTokenizer

    # absolute, so the name MLflow sees (the model's name_or_path) is never a valid hub id:
    # huggingface_hub rejects it before any request when MLflow looks for a license there
    saved = Path(saved).expanduser().resolve()
    arch, auto, task = head_of(saved)
    with quiet():
        model = getattr(transformers, auto).from_pretrained(saved, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(saved, trust_remote_code=trust_remote_code)
        mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer}, name=target.name, task=task,
            model_id=target.model_id, run_id=target.run_id, step=target.step,
            model_card=model_card(target, arch, task),
            pip_requirements=requirements())
    return FLAVOUR
