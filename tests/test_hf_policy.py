"""Policy ``hf`` on a local directory (the hub path is the same code with a hub id)."""

from __future__ import annotations

import json

import pytest
import torch
from _cli import rlx

from rlx.plugins.hf.config import HFConfig
from rlx.plugins.hf.policy import HFPolicy
from rlx.plugins.tiny.policy import CHECKPOINT


@pytest.fixture(scope="module")
def policy():
    return HFPolicy(HFConfig(model=str(CHECKPOINT)))


def test_generate_and_log_probs_agree(policy):
    torch.manual_seed(0)
    batch = policy.generate(["Q:3+4\n", "Q:12-5+1\n"], max_new_tokens=20, temperature=1.0)
    assert batch["actions"].shape == batch["mask"].shape
    for text, ends in zip(batch.meta["completion"], batch.meta["token_ends"]):
        assert ends == list(range(1, len(text) + 1))  # char-level: one char per token
    # teacher-forcing the sampled completions reproduces the generation's log-probs
    logp, ent = policy.log_probs(batch, entropy=True)
    again = policy.encode(batch.meta["prompt"], batch.meta["completion"])
    logp2, _ = policy.log_probs(again)
    m = batch["mask"]
    n = int(m[0].sum())
    assert torch.allclose(logp[0, :n], logp2[0, :n], atol=1e-5)
    assert (ent[m.bool()] >= 0).all()


def test_greedy_is_deterministic(policy):
    a = policy.generate(["Q:7+8-2\n"] * 3, max_new_tokens=24, greedy=True).meta["completion"]
    assert len(set(a)) == 1


def test_reference_is_frozen_copy(policy):
    ref = policy.reference()
    assert all(not p.requires_grad for p in ref.model.parameters())
    assert ref.model is not policy.model


def test_run_with_local_directory(tmp_path):
    # also: MLFLOW_TRACKING_URI sends the run to another store, RLX_HOME keeps the catalog
    store = tmp_path / "elsewhere" / "store.db"
    store.parent.mkdir()
    uri = f"sqlite:///{store}"
    proc = rlx("run", "--policy", "hf", "--set", f"policy.model={CHECKPOINT}", "--reward", "verifier",
               "--steps", "2", "--set", "run.batch_size=2", "--set", "objective.num_generations=2",
               "--set", "run.eval_every=0", "--set", "env.eval_size=8", "--no-progress", home=tmp_path,
               MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)
    assert runs[0]["policy"] == "hf" and runs[0]["status"] == "FINISHED" and runs[0]["tracking_uri"] == uri
    assert store.exists() and not (tmp_path / "mlflow.db").exists()
    assert (store.parent / "mlartifacts").is_dir()  # artifacts beside the store, not in the cwd
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=uri).get_run(runs[0]["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["rlx.policy"] == "hf"
