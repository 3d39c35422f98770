"""``--num-processes 2`` on CPU: two real processes under accelerate (gloo), one MLflow run,
and the same parameters as one process with twice the per-process batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from _cli import cli_env, make_plugin, rlx

pytestmark = [pytest.mark.slow, pytest.mark.writer_process]

COMMON = ["run", "--objective", "grpo", "--reward", "prm", "--seed", "5", "--steps", "4",
          "--set", "objective.num_generations=4", "--set", "run.eval_every=0", "--set", "env.eval_size=16",
          "--set", "generation.max_new_tokens=32", "--set", "run.checkpoint_every=0", "--no-progress",
          # the tolerances below are fp32's rounding; auto may pick bf16 on a CPU with AMX
          "--precision", "fp32"]


def test_two_processes_match_one_with_double_batch(tmp_path):
    two = rlx(*COMMON, "--num-processes", "2", "--set", "run.batch_size=2", "--experiment", "two", home=tmp_path)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "Traceback" not in two.stderr and two.stdout.count("FINISHED") == 1  # rank 0 reports, once
    one = rlx(*COMMON, "--set", "run.batch_size=4", "--experiment", "one", home=tmp_path)
    assert one.returncode == 0, one.stderr

    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    assert set(runs) == {"one", "two"} and all(r["status"] == "FINISHED" for r in runs.values())
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run2 = client.get_run(runs["two"]["mlflow_run_id"])
    assert run2.data.tags["rlx.num_processes"] == "2"
    assert run2.data.tags["rlx.run_id"] == runs["two"]["id"]  # every rank agreed on one id
    assert len(client.search_runs([client.get_experiment_by_name("two").experiment_id])) == 1

    w1 = load_file(f"{runs['one']['policy_dir']}/model.safetensors")
    w2 = load_file(f"{runs['two']['policy_dir']}/model.safetensors")
    from rlx.plugins.tiny.policy import CHECKPOINT

    init = load_file(str(CHECKPOINT / "model.safetensors"))
    import torch

    moved = torch.cat([(w1[k] - init[k]).flatten() for k in w1]).abs()
    diff = torch.cat([(w1[k] - w2[k]).flatten() for k in w1]).abs()
    print(f"|w1 - w2| max {float(diff.max()):.3g} mean {float(diff.mean()):.3g}; "
          f"|w1 - w_init| max {float(moved.max()):.3g} mean {float(moved.mean()):.3g}")
    assert float(moved.max()) > 1e-4  # training moved the weights: the comparison is not vacuous
    # the same updates up to float rounding. Rounding differs with the rows per process, and
    # Adam's first steps (update ~ lr * g / |g|) blow it up on the few weights whose gradient
    # is ~0: a handful of elements move apart by up to ~1e-5. Gradients that were not
    # averaged across the processes would move every weight apart by ~lr.
    assert float(diff.mean()) < 1e-5 * float(moved.mean()), float(diff.mean())
    assert int((diff > 1e-6).sum()) <= 10 and float(diff.max()) < 0.1 * float(moved.max()), float(diff.max())
    # logged metrics are averaged over ranks, so they match too
    for key in ("reward/mean", "loss/policy"):
        a = [m.value for m in sorted(client.get_metric_history(runs["one"]["mlflow_run_id"], key), key=lambda m: m.step)]
        b = [m.value for m in sorted(client.get_metric_history(runs["two"]["mlflow_run_id"], key), key=lambda m: m.step)]
        assert a == pytest.approx(b, abs=1e-5), key


ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_processes: 2
num_machines: 1
machine_rank: 0
mixed_precision: 'no'
dynamo_config: {}
"""


def test_accelerate_config_file_is_passed_through(tmp_path):
    cfg = tmp_path / "cpu2.yaml"
    cfg.write_text(ACCELERATE_CONFIG)
    proc = rlx(*COMMON, "--accelerate-config", str(cfg), "--set", "run.batch_size=1", "--steps", "2",
               "--experiment", "cfg", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").get_run(runs[0]["mlflow_run_id"])
    assert run.data.tags["rlx.num_processes"] == "2" and run.info.status == "FINISHED"


PAUSE_AT = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from rlx.hookspecs import hookimpl

    @hookimpl
    def rlx_step_end(step, metrics):
        if os.environ.get("RLX_TEST_PAUSE_AT") == str(step):
            Path(os.environ["RLX_TEST_MARKER"]).write_text(str(step))
            time.sleep(3)  # the step stays in flight while the test presses Ctrl-C
''')


def test_ctrl_c_then_resume_keeps_two_processes(tmp_path):
    """Ctrl-C at the terminal reaches the ranks once (through rlx, not also through torch's
    launcher): they checkpoint together and the run ends KILLED. `rlx runs resume` then runs
    it in two processes again, and it ends where the uninterrupted run does."""
    site = make_plugin(tmp_path / "site", "pause", PAUSE_AT)
    args = [*COMMON, "--num-processes", "2", "--set", "run.batch_size=2"]
    straight = rlx(*args, "--experiment", "straight", home=tmp_path, paths=[site])
    assert straight.returncode == 0, straight.stderr
    marker = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-m", "rlx.cli.main", *args, "--experiment", "cut"],
                            env=cli_env(tmp_path, [site], RLX_TEST_PAUSE_AT="2", RLX_TEST_MARKER=str(marker)),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not marker.exists():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "KILLED: interrupted by SIGINT after step 2" in err and "Traceback" not in err
    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    assert runs["cut"]["status"] == "KILLED" and runs["cut"]["checkpoint"].endswith("step_00000002")

    resumed = rlx("runs", "resume", runs["cut"]["id"], "--no-progress", home=tmp_path, paths=[site])
    assert resumed.returncode == 0, resumed.stderr
    assert "in 2 processes" in resumed.stderr
    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    assert runs["cut"]["status"] == "FINISHED"
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    for key in ("reward/mean", "loss/policy"):
        a = sorted((m.step, m.value) for m in client.get_metric_history(runs["straight"]["mlflow_run_id"], key))
        b = sorted((m.step, m.value) for m in client.get_metric_history(runs["cut"]["mlflow_run_id"], key))
        assert [s for s, _ in b] == [s for s, _ in a] == [1, 2, 3, 4], key
        assert [v for _, v in b] == pytest.approx([v for _, v in a], abs=1e-6), key
    wa = load_file(f"{runs['straight']['policy_dir']}/model.safetensors")
    wb = load_file(f"{runs['cut']['policy_dir']}/model.safetensors")
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6
