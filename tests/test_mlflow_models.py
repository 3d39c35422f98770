"""Policy.log_model: a saved policy logged as an MLflow model (a LoggedModel in a real
sqlite store) loads back with MLflow alone and acts as the policy does: the tiny LM as a
transformers text-generation pipeline, an rm classifier as text-classification, an mlp
as a pyfunc model; a logged model registers as version 1; no hub request is made."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from rlx.policy import ModelTarget, Policy


@dataclass
class Store:
    uri: str
    client: MlflowClient
    experiment_id: str
    run_id: str

    def log(self, policy: Policy, saved: Path, name: str = "policy") -> tuple[str, ModelTarget, str]:
        """``policy.log_model`` into a new LoggedModel of the run, as the loop calls it; the
        flavour, the target and a line saying how long it took (printed by the test, after
        any output it captures)."""
        model = mlflow.initialize_logged_model(name=name, source_run_id=self.run_id, experiment_id=self.experiment_id)
        target = ModelTarget(model.model_id, self.run_id, name, self.uri)
        start = time.perf_counter()
        flavour = policy.log_model(saved, target)
        return flavour, target, f"\n{type(policy).__name__}.log_model ({flavour}): {time.perf_counter() - start:.2f} s"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A run in a fresh sqlite store, MLflow's tracking URI pointed at it for the test and
    set back afterwards (set_tracking_uri also writes MLFLOW_TRACKING_URI, which
    monkeypatch restores)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("models", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(experiment_id)
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        yield Store(uri, client, experiment_id, run.info.run_id)
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Name lookups and connections made by the test's own thread, each refused. MLflow's
    telemetry runs in a thread of its own and is not counted."""
    attempts: list[Any] = []
    main = threading.current_thread()

    def refuse(kind: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not main:
                return real(*args, **kwargs)
            attempts.append((kind, args[1] if kind == "connect" else args[0]))
            raise OSError(f"no network in this test ({kind})")
        return call

    monkeypatch.setattr(socket, "getaddrinfo", refuse("lookup", socket.getaddrinfo))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect", socket.socket.connect))
    return attempts


def tiny() -> Any:
    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    return TinyPolicy(TinyConfig())


def test_tiny_policy_loads_back_as_a_text_generation_pipeline(store: Store, no_network: list[Any], tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    from transformers import TextGenerationPipeline
    from transformers.utils import logging as hf_logging

    policy = tiny()
    policy.add_value_head()  # what ppo adds: training machinery the logged model must not carry
    policy.save(tmp_path / "policy")
    bars_before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # so that a bar log_model failed to silence would show
    flavour_level = logging.getLogger("mlflow.transformers").level
    capfd.readouterr()
    try:
        flavour, target, took = store.log(policy, tmp_path / "policy")
        out, err = capfd.readouterr()
        assert hf_logging.is_progress_bar_enabled()  # as it was before the call
    finally:
        (hf_logging.enable_progress_bar if bars_before else hf_logging.disable_progress_bar)()
    print(took)
    assert flavour == "transformers"
    for noise in ("Loading weights", "Writing model shards", "WARNING", "model card", "license"):
        assert noise not in out + err, (noise, out + err)
    assert logging.getLogger("mlflow.transformers").level == flavour_level
    assert no_network == []  # no hub lookup for a model card or a license

    logged = store.client.get_logged_model(target.model_id)
    assert logged.status == LoggedModelStatus.READY and logged.source_run_id == store.run_id
    assert target.model_id in [o.model_id for o in store.client.get_run(store.run_id).outputs.model_outputs]

    pipe = mlflow.transformers.load_model(f"models:/{target.model_id}")
    assert isinstance(pipe, TextGenerationPipeline)
    assert not any("rlx_value_head" in k for k in pipe.model.state_dict())
    prompts = ["Q: 2+3=", "Q: 17+25="]
    ours = policy.generate(prompts, max_new_tokens=12, greedy=True).meta["completion"]
    for prompt, completion in zip(prompts, ours):
        text = pipe(prompt, max_new_tokens=12, do_sample=False)[0]["generated_text"]
        assert text == prompt + completion, (text, completion)
    assert completion  # the checkpoint writes something: the comparison is not of two empty strings

    requirements = (Path(store.client.get_logged_model(target.model_id).artifact_location) / "requirements.txt")
    assert {r.split("==")[0] for r in requirements.read_text().split()} >= {"transformers", "torch"}


def test_classifier_reward_model_loads_back_as_text_classification(store: Store, no_network: list[Any],
                                                                  tmp_path: Path) -> None:
    from transformers import TextClassificationPipeline

    from rlx.plugins.rm.config import RMConfig
    from rlx.plugins.rm.objective import RewardModelTraining

    policy = tiny()
    RewardModelTraining(RMConfig(head="classifier")).setup(policy)  # the policy becomes the reward model
    policy.save(tmp_path / "reward_model")
    flavour, target, took = store.log(policy, tmp_path / "reward_model", name="reward_model")
    print(took)
    assert flavour == "transformers" and no_network == []

    pipe = mlflow.transformers.load_model(f"models:/{target.model_id}")
    assert isinstance(pipe, TextClassificationPipeline)
    text = "Q: 2+3=A: 5"
    with torch.no_grad():
        enc = policy.tokenizer(text, return_tensors="pt")
        logit = policy.model.eval()(**enc).logits[0, 0].item()
    assert pipe(text, function_to_apply="none")[0]["score"] == pytest.approx(logit, abs=1e-5)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_mlp_policy_loads_back_as_a_pyfunc_model_that_acts(store: Store, tmp_path: Path, env_id: str,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    from rlx.plugins.gym.config import GymConfig
    from rlx.plugins.gym.env import GymEnv
    from rlx.plugins.mlp.config import MLPConfig
    from rlx.plugins.mlp.policy import MLPPolicy

    env = GymEnv(GymConfig(id=env_id, num_envs=4), seed=0)
    try:
        torch.manual_seed(0)
        policy = MLPPolicy(MLPConfig(hidden_sizes=[16, 16]), env=env)
        for p in policy.model.parameters():  # off the near-zero head init, so actions differ between rows
            torch.nn.init.normal_(p, std=0.5)
        policy.save(tmp_path / "policy")
        capfd.readouterr()
        flavour, target, took = store.log(policy, tmp_path / "policy")
        out, err = capfd.readouterr()
        print(took)
        obs = torch.cat([env.reset(), torch.randn(12, policy.obs_dim)])
    finally:
        env.close()
    assert flavour == "pyfunc"
    for noise in ("Downloading artifacts", "WARNING", "Warning"):
        assert noise not in out + err, (noise, out + err)

    model = mlflow.pyfunc.load_model(f"models:/{target.model_id}")
    with torch.no_grad():
        expected = policy.act(obs, deterministic=True)[0].numpy()
    if policy.discrete:
        assert len(set(expected.tolist())) > 1
    as_numpy = obs.numpy()
    for given in (as_numpy, as_numpy.astype(np.float64), as_numpy.tolist(), pd.DataFrame(as_numpy)):
        actions = model.predict(given)
        assert isinstance(actions, np.ndarray) and actions.shape == expected.shape, type(given)
        np.testing.assert_allclose(actions, expected, rtol=0, atol=1e-6)
    schema = model.metadata.get_input_schema()
    assert len(schema.inputs) == policy.obs_dim  # one column per observation value, shown in the UI
    assert target.model_id in [o.model_id for o in store.client.get_run(store.run_id).outputs.model_outputs]


def test_logged_model_registers_as_version_1(store: Store, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from rlx.plugins.mlp.config import MLPConfig
    from rlx.plugins.mlp.policy import MLPPolicy

    env = SimpleNamespace(observation_space=SimpleNamespace(shape=(4,)), action_space=SimpleNamespace(n=2))
    policy = MLPPolicy(MLPConfig(), env=env)
    policy.save(tmp_path / "policy")
    _, target, took = store.log(policy, tmp_path / "policy")
    print(took)

    version = mlflow.register_model(f"models:/{target.model_id}", "rlx-cartpole")
    assert version.version in (1, "1")
    registered = store.client.get_model_version("rlx-cartpole", "1")
    # the sqlite registry leaves ModelVersion.model_id empty (MLflow 3.17); the source names the model
    assert registered.source == f"models:/{target.model_id}" and registered.run_id == store.run_id
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = policy.act(torch.as_tensor(obs), deterministic=True)[0].numpy()
    np.testing.assert_array_equal(mlflow.pyfunc.load_model("models:/rlx-cartpole/1").predict(obs), expected)


def test_mlp_with_wide_observations_takes_one_float32_tensor(store: Store, tmp_path: Path) -> None:
    """Past MAX_COLUMNS values an observation is one tensor input, not a column per value."""
    from types import SimpleNamespace

    from rlx.plugins.mlp import mlflow_model
    from rlx.plugins.mlp.config import MLPConfig
    from rlx.plugins.mlp.policy import MLPPolicy

    shape = (16, mlflow_model.MAX_COLUMNS // 16 + 1)
    env = SimpleNamespace(observation_space=SimpleNamespace(shape=shape), action_space=SimpleNamespace(shape=(2,)))
    policy = MLPPolicy(MLPConfig(hidden_sizes=[8]), env=env)
    policy.save(tmp_path / "policy")
    _, target, took = store.log(policy, tmp_path / "policy")
    print(took)

    model = mlflow.pyfunc.load_model(f"models:/{target.model_id}")
    (spec,) = model.metadata.get_input_schema().inputs
    assert spec.shape == (-1, policy.obs_dim) and spec.type == np.dtype(np.float32)
    obs = torch.randn(3, policy.obs_dim)
    with torch.no_grad():
        expected = policy.act(obs, deterministic=True)[0].numpy()
    np.testing.assert_allclose(model.predict(obs.numpy()), expected, rtol=0, atol=1e-6)
