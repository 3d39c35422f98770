"""The switches of what an `rlx run` leaves in MLflow (what it leaves by default is checked
through the UI and the API in test_mlflow_ui.py)."""

from __future__ import annotations

import json

import pytest
from _cli import rlx

pytestmark = pytest.mark.slow

SMALL = ["--objective", "grpo", "--reward", "prm", "--steps", "4", "--set", "run.batch_size=2",
         "--set", "objective.num_generations=2", "--set", "env.eval_size=4", "--set", "generation.max_new_tokens=16",
         "--set", "run.eval_every=0", "--set", "objective.loss_type=dr_grpo", "--no-progress"]


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
