"""SIGKILL at a random step, ``rlx runs resume``, and the result equals an uninterrupted
run: same final parameters, same metric history, one MLflow run."""

from __future__ import annotations

import json
import random
import textwrap

import pytest
from _cli import make_plugin, rlx

pytestmark = pytest.mark.slow

KILLER = textwrap.dedent('''
    import os, signal
    from rlx.hookspecs import hookimpl

    @hookimpl
    def rlx_step_end(step, metrics):
        if os.environ.get("RLX_TEST_KILL_AT") == str(step):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a real crash
''')

STEPS = 8
ARGS = ["run", "--objective", "grpo", "--reward", "prm", "--seed", "3", "--steps", str(STEPS),
        "--set", "run.checkpoint_every=2", "--set", "run.batch_size=2", "--set", "objective.num_generations=4",
        "--set", "run.eval_every=4", "--set", "env.eval_size=16", "--set", "generation.max_new_tokens=32",
        "--set", "objective.num_iterations=2", "--no-progress"]
NONDETERMINISTIC = ("perf/",)


def _history(client, run_id):
    run = client.get_run(run_id)
    out = {}
    for key in run.data.metrics:
        if key.startswith(NONDETERMINISTIC):
            continue
        hist = client.get_metric_history(run_id, key)
        out[key] = sorted((m.step, m.value) for m in hist)
    return out


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    site = make_plugin(tmp_path / "site", "killer", KILLER)
    kill_at = random.Random().randint(3, STEPS - 1)
    ref = rlx(*ARGS, "--experiment", "straight", home=tmp_path, paths=[site])
    assert ref.returncode == 0, ref.stderr
    crashed = rlx(*ARGS, "--experiment", "crashy", home=tmp_path, paths=[site], RLX_TEST_KILL_AT=str(kill_at))
    assert crashed.returncode == -9, (kill_at, crashed.stderr)

    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    assert runs["crashy"]["status"] == "CRASHED", runs["crashy"]  # the process is gone: not "running"
    resumed = rlx("runs", "resume", runs["crashy"]["id"][:8], "--no-progress", home=tmp_path, paths=[site])
    assert resumed.returncode == 0, resumed.stderr
    assert "FINISHED" in resumed.stdout

    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    assert runs["crashy"]["status"] == "FINISHED"
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert len(client.search_runs([client.get_experiment_by_name("crashy").experiment_id])) == 1
    assert client.get_run(runs["crashy"]["mlflow_run_id"]).info.status == "FINISHED"

    a = _history(client, runs["straight"]["mlflow_run_id"])
    b = _history(client, runs["crashy"]["mlflow_run_id"])
    assert sorted(a) == sorted(b)
    for key in a:
        steps_a, steps_b = [s for s, _ in a[key]], [s for s, _ in b[key]]
        assert steps_b == steps_a, (key, kill_at, steps_b)  # each step exactly once, none missing
        assert len(set(steps_b)) == len(steps_b)
        for (_, va), (_, vb) in zip(a[key], b[key]):
            assert abs(va - vb) <= 1e-6, (key, kill_at, va, vb)
    assert [s for s, _ in a["reward/mean"]] == list(range(1, STEPS + 1))

    # the newest run.keep_checkpoints (2) are kept, the older ones pruned
    ckpts = sorted(p.name for p in (tmp_path / "runs" / runs["straight"]["id"] / "checkpoints").iterdir())
    assert ckpts == ["step_00000004", "step_00000006"]

    wa = load_file(f"{runs['straight']['policy_dir']}/model.safetensors")
    wb = load_file(f"{runs['crashy']['policy_dir']}/model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6


def test_resume_refusals(tmp_path):
    proc = rlx("runs", "resume", "nope", home=tmp_path)
    assert proc.returncode == 2 and "no run 'nope'" in proc.stderr
    done = rlx("run", "--steps", "1", "--set", "run.batch_size=1", "--set", "objective.num_generations=2",
               "--set", "env.eval_size=4", "--set", "run.save_policy=false", "--no-progress", home=tmp_path)
    assert done.returncode == 0, done.stderr
    rid = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)[0]["id"]
    proc = rlx("runs", "resume", rid, home=tmp_path)
    assert proc.returncode == 2 and "already FINISHED" in proc.stderr and "Traceback" not in proc.stderr
