"""What one `rlx run` leaves in MLflow for a researcher browsing it: a name that says what
differs, the group and variant tags, where the code came from, who ran it, system
metrics, the datasets, the policy as a registered MLflow model, and the link to its page."""

from __future__ import annotations

import json
import subprocess

import pytest
from _cli import rlx

pytestmark = pytest.mark.slow

SMALL = ["--objective", "grpo", "--reward", "prm", "--steps", "4", "--set", "run.batch_size=2",
         "--set", "objective.num_generations=2", "--set", "env.eval_size=4", "--set", "generation.max_new_tokens=16",
         "--set", "run.eval_every=0", "--set", "objective.loss_type=dr_grpo", "--no-progress"]


def _project(tmp_path):
    """A researcher's own git work tree to run from."""
    proj = tmp_path / "proj"
    proj.mkdir()
    git = ["git", "-c", "user.email=r@example.org", "-c", "user.name=r"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=proj, check=True)
    (proj / "notes.txt").write_text("experiment notes\n")
    subprocess.run([*git, "add", "."], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "start"], cwd=proj, check=True)
    return proj, subprocess.run(["git", "rev-parse", "HEAD"], cwd=proj, capture_output=True, text=True).stdout.strip()


def test_a_run_as_the_mlflow_ui_shows_it(tmp_path):
    from mlflow.tracking import MlflowClient

    proj, commit = _project(tmp_path)
    proc = rlx("run", *SMALL, "--register", "arith-policy", home=tmp_path, cwd=proj,
               MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    run_row = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_row["mlflow_run_id"])
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "rlx/arithmetic"
    # rlx run ends with the link to the run's page
    assert f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}" in proc.stdout

    tags = run.data.tags
    assert run.info.run_name == run_row["name"]
    assert run.info.run_name.startswith("grpo-dr_grpo-") and run.info.run_name.endswith("-prm-arithmetic-s0")
    assert tags["rlx.variant"].startswith("objective.num_generations=2, objective.loss_type=dr_grpo, ")
    assert len(tags["rlx.group"]) == 12 and tags["rlx.task"] == "arithmetic"
    assert tags["mlflow.source.git.commit"] == tags["rlx.project_commit"] == commit
    assert tags["rlx.project_dirty"] == "false" and tags["mlflow.source.git.branch"] == "main"
    assert tags["mlflow.user"] and tags["rlx.host"] and tags["rlx.version"]
    assert "None" not in run.data.params.values()  # unset settings are left out, not "None"
    assert "run.name" not in run.data.params

    # MLflow's system metrics, sampled by the writer process every second here
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert cpu and all(0 <= m.value <= 100 for m in cpu)
    assert cpu[0].value > 0, "the first CPU sample must measure something (psutil's first call reads 0.0)"
    assert "system/system_memory_usage_megabytes" in run.data.metrics

    # the datasets: training source and held-out split
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    assert inputs["evaluation"].name == "arithmetic-eval" and json.loads(inputs["evaluation"].profile)["num_rows"] == 4

    # the policy as an MLflow model, registered
    assert tags["rlx.model_flavour"] == "transformers" and tags["rlx.registered_model"] == "arith-policy/1"
    model = client.get_logged_model(tags["rlx.model_id"])
    assert model.source_run_id == run.info.run_id and model.experiment_id == exp.experiment_id
    version = client.get_model_version("arith-policy", "1")
    assert version.run_id == run.info.run_id
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    try:
        pipe = mlflow.transformers.load_model("models:/arith-policy/1")
        out = pipe("Q:2+3", max_new_tokens=6, do_sample=False)
    finally:
        mlflow.set_tracking_uri(None)
    assert out[0]["generated_text"].startswith("Q:2+3")


def test_switches_leave_out_system_metrics_and_the_model(tmp_path):
    from mlflow.tracking import MlflowClient

    proc = rlx("run", *SMALL, "--no-system-metrics", "--set", "run.log_model=false", "--seed", "1",
               home=tmp_path, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1")
    assert proc.returncode == 0, proc.stderr
    run_row = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(run_row["mlflow_run_id"])
    assert not [k for k in run.data.metrics if k.startswith("system/")]
    assert "rlx.model_id" not in run.data.tags and not client.search_logged_models([run.info.experiment_id])
    assert "mlflow.source.git.commit" not in run.data.tags  # not run from a git work tree
    assert any(a.path == "policy" for a in client.list_artifacts(run.info.run_id))  # the files are still there
