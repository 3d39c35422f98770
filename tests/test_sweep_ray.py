"""``rlx sweep --launcher ray`` end to end on a two-node simulated cluster
(``ray.cluster_utils.Cluster``): runs land on both nodes, nest under the sweep's parent,
and give the same per-run metrics as the same sweep on the local launcher (runs are
deterministic on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import rlx

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

SPEC = '''
name = "two-nodes"
seeds = 2
metric = "eval/accuracy"
[base.objective]
name = "grpo"
num_generations = 4
[base.run]
steps = 3
batch_size = 2
eval_every = 0
checkpoint_every = 0
threads = 1
[base.env]
eval_size = 16
[base.generation]
max_new_tokens = 24
'''


def _per_run(home: Path) -> dict[int, dict[str, float]]:
    """Each run's final metrics (timings aside) by seed."""
    from mlflow.tracking import MlflowClient

    sweep = json.loads(rlx("sweep", "list", "--json", home=home).stdout)[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("rlx").experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{sweep['mlflow_run_id']}'")
    return {int(r.data.tags["rlx.seed"]): {k: v for k, v in r.data.metrics.items() if not k.startswith("perf/")}
            for r in runs}


def test_a_sweep_on_a_two_node_cluster_equals_the_local_one(tmp_path):
    from ray.cluster_utils import Cluster

    spec = tmp_path / "two.toml"
    spec.write_text(SPEC)
    local = rlx("sweep", str(spec), "--max-parallel", "2", "--no-live", home=tmp_path / "local", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        home = tmp_path / "ray"
        proc = rlx("sweep", str(spec), "--launcher", "ray", "--set", f"launcher.address={cluster.address}",
                   "--no-live", "--json", home=home, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        cluster.shutdown()
    assert "on launcher 'ray'" in proc.stderr
    shown = json.loads(rlx("sweep", "show", json.loads(rlx("sweep", "list", "--json", home=home).stdout)[0]["id"],
                           "--json", home=home).stdout)
    assert [r["status"] for r in shown["runs"]] == ["FINISHED", "FINISHED"]
    logs = sorted((home / "sweeps" / shown["id"] / "logs").iterdir())
    assert len(logs) == 2 and all("FINISHED" in p.read_text() for p in logs)
    # each node has 1 CPU and each run reserves 1: one run on each
    where = [r["where"] for r in json.loads(proc.stdout)["runs"]]
    assert len(set(where)) == 2 and all("ray node" in w for w in where), where

    a, b = _per_run(tmp_path / "local"), _per_run(home)
    assert a.keys() == b.keys() == {0, 1}
    for seed in a:
        assert a[seed].keys() == b[seed].keys()
        for name, value in a[seed].items():
            assert abs(value - b[seed][name]) <= 1e-6, (seed, name, value, b[seed][name])
