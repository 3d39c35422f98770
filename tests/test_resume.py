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
NONDETERMINISTIC = ("perf/", "system/")  # timings and MLflow's CPU/memory samples


def _history(client, run_id):
    run = client.get_run(run_id)
    out = {}
    for key in run.data.metrics:
        if key.startswith(NONDETERMINISTIC):
            continue
        hist = client.get_metric_history(run_id, key)
        out[key] = sorted((m.step, m.value) for m in hist)
    return out


@pytest.mark.parametrize("precision", ["auto", "bf16"])  # auto: fp32 or bf16, as this CPU decides
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, precision):
    site = make_plugin(tmp_path / "site", "killer", KILLER)
    kill_at = random.Random().randint(3, STEPS - 1)
    args = [*ARGS, "--precision", precision]
    ref = rlx(*args, "--experiment", "straight", home=tmp_path, paths=[site])
    assert ref.returncode == 0, ref.stderr
    crashed = rlx(*args, "--experiment", "crashy", home=tmp_path, paths=[site], RLX_TEST_KILL_AT=str(kill_at))
    assert crashed.returncode == -9, (kill_at, crashed.stderr)

    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    assert runs["crashy"]["status"] == "CRASHED", runs["crashy"]  # the process is gone: not "running"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    note = client.get_run(runs["crashy"]["mlflow_run_id"]).data.tags["mlflow.note.content"]
    assert "**CRASHED**" in note and f"rlx runs resume {runs['crashy']['id']}" in note, note
    resumed = rlx("runs", "resume", runs["crashy"]["id"][:8], "--no-progress", home=tmp_path, paths=[site])
    assert resumed.returncode == 0, resumed.stderr
    assert "FINISHED" in resumed.stdout

    runs = {r["experiment"]: r for r in json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)}
    assert runs["crashy"]["status"] == "FINISHED"
    from safetensors.torch import load_file

    assert len(client.search_runs([client.get_experiment_by_name("crashy").experiment_id])) == 1
    tags = client.get_run(runs["crashy"]["mlflow_run_id"]).data.tags
    from rlx.plugins.tiny.policy import CHECKPOINT
    from rlx.precision import choose

    tiny = sum(t.numel() for t in load_file(str(CHECKPOINT / "model.safetensors")).values())
    want = "bf16" if precision == "bf16" else choose("auto", "cpu", tiny).name
    assert tags["rlx.precision"] == want, tags.get("rlx.precision_why")
    assert client.get_run(runs["crashy"]["mlflow_run_id"]).info.status == "FINISHED"
    assert "mlflow.note.content" not in client.get_run(runs["crashy"]["mlflow_run_id"]).data.tags  # running again

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

    # the newest run.keep_checkpoints (2) are kept, the older ones pruned; the last step is
    # always checkpointed (before the final evaluation and save)
    ckpts = sorted(p.name for p in (tmp_path / "runs" / runs["straight"]["id"] / "checkpoints").iterdir())
    assert ckpts == ["step_00000006", "step_00000008"]

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


STOP_AT_2 = textwrap.dedent('''
    import os, signal
    from rlx.hookspecs import hookimpl

    @hookimpl
    def rlx_step_end(step, metrics):
        if os.environ.get("RLX_TEST_STOP_AT") == str(step):
            os.kill(os.getpid(), signal.SIGTERM)
''')


def test_a_moved_home_resumes_and_leaves_the_old_place_alone(tmp_path):
    """The stores hold absolute paths into RLX_HOME; after `mv`, rlx follows the home."""
    import shutil

    site = make_plugin(tmp_path / "site", "stopper", STOP_AT_2)
    old, new = tmp_path / "old-home", tmp_path / "new-home"
    old.mkdir()
    args = ["run", "--steps", "4", "--set", "run.batch_size=1", "--set", "objective.num_generations=2",
            "--set", "env.eval_size=4", "--set", "generation.max_new_tokens=16", "--set", "run.eval_every=0",
            "--no-progress"]
    cut = rlx(*args, home=old, paths=[site], RLX_TEST_STOP_AT="2")
    assert cut.returncode == 143, cut.stderr
    shutil.move(str(old), str(new))
    resumed = rlx("runs", "resume", json.loads(rlx("runs", "list", "--json", home=new).stdout)[0]["id"],
                  "--no-progress", home=new, paths=[site])
    assert resumed.returncode == 0, resumed.stderr
    assert "RLX_HOME moved" in resumed.stderr
    assert not old.exists()  # nothing re-created the old home
    run = json.loads(rlx("runs", "list", "--json", home=new).stdout)[0]
    assert run["status"] == "FINISHED" and run["policy_dir"].startswith(str(new))
    assert run["tracking_uri"] == f"sqlite:///{new}/mlflow.db"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=run["tracking_uri"])
    mrun = client.get_run(run["mlflow_run_id"])
    assert mrun.info.status == "FINISHED" and mrun.info.artifact_uri.startswith(new.as_uri())
    assert [m.step for m in sorted(client.get_metric_history(mrun.info.run_id, "reward/mean"), key=lambda m: m.step)] \
        == [1, 2, 3, 4]
    assert "policy" in {a.path for a in client.list_artifacts(mrun.info.run_id)}


@pytest.mark.parametrize("damage", ["loop_state.json", "model.safetensors"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    """A disk that filled or a copy cut short leaves the newest checkpoint truncated: resume
    names the file, takes the checkpoint before it, and the run still logs every step once."""
    site = make_plugin(tmp_path / "site", "stopper", STOP_AT_2)
    args = ["run", "--steps", "4", "--set", "run.batch_size=1", "--set", "objective.num_generations=2",
            "--set", "env.eval_size=4", "--set", "generation.max_new_tokens=16", "--set", "run.eval_every=0",
            "--set", "run.checkpoint_every=1", "--no-progress"]
    cut = rlx(*args, home=tmp_path, paths=[site], RLX_TEST_STOP_AT="2")
    assert cut.returncode == 143, cut.stderr
    run = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)[0]
    newest = tmp_path / "runs" / run["id"] / "checkpoints" / "step_00000002"
    assert newest.is_dir()
    target = newest / damage
    target.write_bytes(target.read_bytes()[: max(len(target.read_bytes()) // 2, 1)])
    resumed = rlx("runs", "resume", run["id"], "--no-progress", home=tmp_path, paths=[site])
    assert resumed.returncode == 0, resumed.stderr
    warning = next(ln for ln in resumed.stderr.splitlines() if ln.startswith("warning:"))
    assert damage in warning and "resuming from step_00000001 instead" in warning, warning
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    steps = sorted(m.step for m in client.get_metric_history(run["mlflow_run_id"], "reward/mean"))
    assert steps == [1, 2, 3, 4]


def test_an_unreachable_tracking_server_is_one_line_within_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    proc = rlx("run", "--steps", "1", "--tracking-uri", f"http://127.0.0.1:{port}", "--no-progress", home=tmp_path)
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "--tracking-uri" in errors[0], proc.stderr
