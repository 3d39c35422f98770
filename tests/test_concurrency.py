"""Several ``rlx run`` processes at once on one RLX_HOME (catalog and MLflow store both
SQLite, created by whichever process comes first): every run completes and is recorded."""

from __future__ import annotations

import json

import pytest
from _cli import rlx, start

pytestmark = pytest.mark.slow


def test_four_runs_at_once_on_a_fresh_home(tmp_path):
    procs = [start("run", "--seed", str(i), "--steps", "6", "--set", "run.batch_size=2",
                   "--set", "objective.num_generations=4", "--set", "run.eval_every=3", "--set", "env.eval_size=16",
                   "--set", "run.threads=1", "--set", "run.checkpoint_every=2", "--experiment", f"exp{i % 2}",
                   "--no-progress", home=tmp_path) for i in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    runs = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)
    assert len(runs) == 4 and {r["status"] for r in runs} == {"FINISHED"}
    assert sorted(r["seed"] for r in runs) == [0, 1, 2, 3]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exps = [client.get_experiment_by_name(f"exp{i}") for i in range(2)]
    found = client.search_runs([e.experiment_id for e in exps])
    assert len(found) == 4 and {r.info.status for r in found} == {"FINISHED"}
    for r in found:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "reward/mean")]
        assert sorted(steps) == [1, 2, 3, 4, 5, 6]
