"""``rlx sweep --launcher ray`` end to end on a two-node simulated cluster
(``ray.cluster_utils.Cluster``): runs land on both nodes, nest under the sweep's parent,
and give the same per-run metrics as the same sweep on the local launcher (runs are
deterministic on CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import rlx

# one worker runs every Ray test: address="auto" would find another worker's cluster
pytestmark = [pytest.mark.slow, pytest.mark.one_at_a_time("ray")]
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


def _per_run(home: Path, sweep: dict) -> dict[int, dict[str, float]]:
    """Each run's final metrics as its catalog row holds them (timings aside), by seed."""
    out = {}
    for r in sweep["runs"]:
        row = json.loads(rlx("runs", "show", r["run_id"], "--json", home=home).stdout)
        out[r["seed"]] = {k: v for k, v in row["metrics"].items() if not k.startswith(("perf/", "system/"))}
    return out


def test_a_sweep_on_a_two_node_cluster_equals_the_local_one(tmp_path):
    from ray.cluster_utils import Cluster

    spec = tmp_path / "two.toml"
    spec.write_text(SPEC)
    # tracking off: MLflow is what test_sweep.py checks; here the runs' own records suffice
    local = rlx("sweep", str(spec), "--max-parallel", "2", "--no-live", "--no-tracking", "--json",
                home=tmp_path / "local", cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        home = tmp_path / "ray"
        proc = rlx("sweep", str(spec), "--launcher", "ray", "--set", f"launcher.address={cluster.address}",
                   "--no-live", "--no-tracking", "--json", home=home, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        cluster.shutdown()
    assert "on launcher 'ray'" in proc.stderr
    # each node has 1 CPU and each run reserves 1: one run on each
    ran = json.loads(proc.stdout)["runs"]
    where = [r["where"] for r in ran]
    assert len(set(where)) == 2 and all("ray node" in w for w in where), where
    assert [r["status"] for r in ran] == ["FINISHED", "FINISHED"]
    logs = sorted((home / "sweeps" / json.loads(proc.stdout)["sweep_id"] / "logs").iterdir())
    assert len(logs) == 2 and all("FINISHED" in p.read_text() for p in logs)

    a, b = _per_run(tmp_path / "local", json.loads(local.stdout)), _per_run(home, json.loads(proc.stdout))
    assert a.keys() == b.keys() == {0, 1}
    for seed in a:
        assert a[seed].keys() == b[seed].keys() and len(a[seed]) > 5
        for name, value in a[seed].items():
            assert abs(value - b[seed][name]) <= 1e-6, (seed, name, value, b[seed][name])
