"""The headline run for real (short): grpo + prm on arithmetic with the shipped tiny
policy, then everything a user would look at: MLflow, the catalog, the saved policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import rlx

pytestmark = pytest.mark.slow

STEPS = 40
ARGS = ["run", "--objective", "grpo", "--reward", "prm", "--seed", "0", "--steps", str(STEPS),
        "--set", "run.eval_every=20", "--set", "env.eval_size=200", "--experiment", "headline", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    proc = rlx(*ARGS, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    return home, proc, client


def _mlflow_run(client):
    import mlflow

    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
    df = mlflow.search_runs(experiment_names=["headline"])
    assert len(df) == 1
    return df.iloc[0]


def test_learns(run):
    _, _, client = run
    row = _mlflow_run(client)
    hist = client.get_metric_history(row["run_id"], "eval/accuracy")
    acc = [m.value for m in sorted(hist, key=lambda m: m.step)]
    assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [0, 20, STEPS]
    assert acc[-1] >= acc[0] + 0.05, acc


def test_visible_in_mlflow(run):
    home, _, client = run
    row = _mlflow_run(client)
    assert row["status"] == "FINISHED"
    for tag, value in {"rlx.objective": "grpo", "rlx.env": "arithmetic", "rlx.policy": "tiny",
                       "rlx.rewards": "prm", "rlx.seed": "0", "rlx.version": "0.1.0",
                       "rlx.plugin.grpo": "0.1.0", "rlx.plugin.prm": "0.1.0"}.items():
        assert row[f"tags.{tag}"] == value, tag
    assert "--objective grpo" in row["tags.rlx.command"]
    assert row["params.objective.loss_type"] == "grpo" and row["params.reward.prm.aggregation"] == "min"
    assert row["params.run.steps"] == str(STEPS)
    for m in ("reward/mean", "reward/prm", "loss/policy", "kl/ref", "policy/entropy", "policy/clip_frac",
              "grpo/zero_adv_frac", "perf/step_s", "perf/tokens_per_s", "eval/accuracy"):
        assert f"metrics.{m}" in row.index and row[f"metrics.{m}"] == row[f"metrics.{m}"], m
    # every step logged once, none missing
    steps = [m.step for m in client.get_metric_history(row["run_id"], "reward/mean")]
    assert sorted(steps) == list(range(1, STEPS + 1))
    arts = {a.path for a in client.list_artifacts(row["run_id"])}
    assert {"config.json", "samples", "policy", "learning_curve.png"} <= arts
    cfg = json.loads(Path(client.download_artifacts(row["run_id"], "config.json", str(home))).read_text())
    assert cfg["objective"]["name"] == "grpo" and cfg["reward"] == {"prm": cfg["reward"]["prm"]}
    table = json.loads(Path(client.download_artifacts(row["run_id"], "samples/generations.json", str(home))).read_text())
    assert "completion" in table["columns"] and len(table["data"]) >= 3


def test_in_catalog(run):
    home, _, client = run
    listed = json.loads(rlx("runs", "list", "--json", home=home).stdout)
    assert len(listed) == 1 and listed[0]["status"] == "FINISHED"
    for flt in (["--objective", "grpo"], ["--reward", "prm"], ["--env", "arithmetic"], ["--status", "finished"]):
        assert len(json.loads(rlx("runs", "list", "--json", *flt, home=home).stdout)) == 1, flt
    assert json.loads(rlx("runs", "list", "--json", "--objective", "sft", home=home).stdout) == []
    shown = json.loads(rlx("runs", "show", listed[0]["id"][:6], "--json", home=home).stdout)
    assert shown["mlflow_run_id"] == _mlflow_run(client)["run_id"]
    assert shown["config"]["objective"]["name"] == "grpo"
    assert "eval/accuracy" in shown["metrics"] and Path(shown["policy_dir"]).is_dir()
    table = rlx("runs", "list", home=home)
    assert listed[0]["id"] in table.stdout


def test_saved_policy_loads_in_plain_transformers(run):
    home, _, _ = run
    listed = json.loads(rlx("runs", "list", "--json", home=home).stdout)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = listed[0]["policy_dir"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok("Q:3+4-5\n", return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "A:" in text
