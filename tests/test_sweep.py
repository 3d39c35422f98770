"""``rlx sweep`` end to end on the local launcher: real runs in real subprocesses, a real
MLflow store, real signals (SIGINT and SIGKILL of the controller), and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from _cli import cli_env, rlx

pytestmark = pytest.mark.slow

# a short text run (the tiny policy on arithmetic): deterministic on CPU, resumable exactly
TEXT_BASE = '''
[base.run]
steps = {steps}
batch_size = 2
eval_every = 4
checkpoint_every = 0
threads = 1
[base.objective]
name = "grpo"
num_generations = 4
[base.env]
eval_size = 16
[base.generation]
max_new_tokens = 24
'''


def _spec(tmp_path: Path, name: str, steps: int, seeds: str, axes: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nseeds = "{seeds}"\nmetric = "eval/accuracy"\n' + TEXT_BASE.format(steps=steps)
                    + axes)
    return path


def _client(home: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")


def _sweep(home: Path) -> dict:
    return json.loads(rlx("sweep", "list", "--json", home=home).stdout)[0]


def _show(home: Path, sweep_id: str) -> dict:
    return json.loads(rlx("sweep", "show", sweep_id, "--json", home=home).stdout)


def test_a_sweep_nests_its_runs_under_one_parent(tmp_path):
    home = tmp_path / "home"
    spec = _spec(tmp_path, "betas", 2, "0-1", '[axes]\n"objective.beta" = [0.0, 0.04]\n')
    proc = rlx("sweep", str(spec), "--max-parallel", "2", "--no-live", home=home, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = _sweep(home)
    assert sweep["status"] == "FINISHED" and sweep["runs"] == 4 and sweep["summary"] == "4 finished"
    assert f"sweep {sweep['id']} FINISHED" in proc.stdout

    client = _client(home)
    parent = client.get_run(sweep["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["rlx.sweep_role"] == "parent"
    assert parent.data.params["sweep.runs"] == "4" and parent.data.params["sweep.seeds"] == "0,1"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4
    seen = {(c.data.tags["rlx.cell"], c.data.tags["rlx.seed"]) for c in children}
    assert seen == {(f"objective.beta={b}", s) for b in ("0.0", "0.04") for s in ("0", "1")}
    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["rlx.sweep"] == sweep["id"]
        assert c.info.run_name == f"{c.data.tags['rlx.cell']} s{c.data.tags['rlx.seed']}"
        assert json.loads(c.data.tags["rlx.cell_values"])["objective.beta"] == float(c.data.params["objective.beta"])
        assert c.data.params["run.threads"] == "1"

    # the comparison of the cells, printed and on the parent run
    assert "P(A better)" in proc.stdout and "objective.beta=0.0" in proc.stdout
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert {"compare/summary.json", "compare/pairs.json"} <= logged, logged
    assert any(p.endswith(".png") for p in logged), logged

    listed = json.loads(rlx("runs", "list", "--sweep", sweep["id"][:6], "--json", home=home).stdout)
    assert len(listed) == 4 and {r["sweep_id"] for r in listed} == {sweep["id"]}
    logs = sorted((home / "sweeps" / sweep["id"] / "logs").iterdir())
    assert len(logs) == 4 and all("FINISHED" in p.read_text() for p in logs)
    again = rlx("sweep", "resume", sweep["id"], home=home, cwd=tmp_path)
    assert again.returncode == 2 and "already FINISHED all 4 runs; nothing to resume" in again.stderr


def _wait_for_steps(home: Path, sweep_id: str, n: int, at_least: int, timeout: float = 240) -> list[str]:
    """Run ids of ``n`` runs of the sweep whose heartbeat reached ``at_least`` steps."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready = []
        for beat in (home / "runs").glob("*/progress.json"):
            try:
                if json.loads(beat.read_text())["step"] >= at_least:
                    ready.append(beat.parent.name)
            except (OSError, ValueError):
                pass
        if len(ready) >= n:
            return ready
        time.sleep(0.3)
    raise AssertionError(f"runs of sweep {sweep_id} did not reach step {at_least} in {timeout} s")


def _controller(spec: Path, home: Path, cwd: Path, parallel: int) -> subprocess.Popen:
    """``rlx sweep`` with tracking off: these tests check the runs' own records (the catalog,
    checkpoints, processes); MLflow halves a short run's cost and is checked above."""
    return subprocess.Popen([sys.executable, "-m", "rlx.cli.main", "sweep", str(spec), "--max-parallel",
                             str(parallel), "--no-live", "--no-tracking"], env=cli_env(home), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _training_processes(home: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "rlx.cli.main" in cmd and " run " in f" {cmd} " and (p.environ().get("RLX_HOME") == str(home)):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _final(home: Path, run_id: str) -> dict[str, float]:
    """A run's final metrics as its catalog row holds them (perf/ timings aside)."""
    row = json.loads(rlx("runs", "show", run_id, "--json", home=home).stdout)
    return {k: v for k, v in row["metrics"].items() if not k.startswith(("perf/", "system/"))}


def test_ctrl_c_stops_runs_with_checkpoints_and_resume_finishes_them(tmp_path):
    home = tmp_path / "home"
    spec = _spec(tmp_path, "stop", 30, "0-1")
    proc = _controller(spec, home, tmp_path, 1)  # one at a time: seed 1 has not started when the signal comes
    try:
        _wait_for_steps(home, "", 1, 2)
        sweep_id = _sweep(home)["id"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "stopping the sweep" in err
    shown = _show(home, sweep_id)
    assert shown["status"] == "KILLED"
    assert [r["status"] for r in shown["runs"]] == ["KILLED", "PENDING"]
    assert list((home / "runs" / shown["runs"][0]["run_id"] / "checkpoints").iterdir())  # the step it was in
    assert not _training_processes(home)

    resumed = rlx("sweep", "resume", sweep_id, "--no-live", "--max-parallel", "2", home=home, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "0 of 2 runs already ended" in resumed.stderr
    after = _show(home, sweep_id)
    assert after["status"] == "FINISHED" and [r["status"] for r in after["runs"]] == ["FINISHED"] * 2
    # continued in place: the same run ids
    assert [r["run_id"] for r in after["runs"]] == [r["run_id"] for r in shown["runs"]]


def test_sigkill_of_the_controller_leaves_no_orphan_and_resume_equals_an_uninterrupted_run(tmp_path):
    home = tmp_path / "home"
    spec = _spec(tmp_path, "kill", 12, "0-1")
    proc = _controller(spec, home, tmp_path, 1)
    try:
        first = _wait_for_steps(home, "", 1, 12)  # seed 0 finished its steps ...
        deadline = time.time() + 120
        while len(list((home / "runs").glob("*/progress.json"))) < 2 and time.time() < deadline:
            time.sleep(0.3)
        second = _wait_for_steps(home, "", 2, 3)  # ... and seed 1 is training
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 90
    while _training_processes(home) and time.time() < deadline:
        time.sleep(0.5)
    assert not _training_processes(home), "a run outlived its SIGKILLed controller"
    sweep = _sweep(home)
    assert sweep["status"] == "CRASHED"
    shown = _show(home, sweep["id"])
    done = [r for r in shown["runs"] if r["status"] == "FINISHED"]
    assert [r["run_id"] for r in done] == first and len(second) == 2
    killed = [r for r in shown["runs"] if r["status"] != "FINISHED"]
    assert [r["status"] for r in killed] == ["KILLED"], shown["runs"]  # SIGTERM from the dying parent

    ended_at = json.loads(rlx("runs", "show", first[0], "--json", home=home).stdout)["ended_at"]
    resumed = rlx("sweep", "resume", sweep["id"][:8], "--no-live", home=home, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 of 2 runs already ended" in resumed.stderr
    assert json.loads(rlx("runs", "show", first[0], "--json", home=home).stdout)["ended_at"] == ended_at  # not redone
    assert f"run {first[0]}" not in resumed.stderr

    # the interrupted run ends as the same config run straight through does (its logged
    # config re-creates it outside the sweep)
    cut = killed[0]["run_id"]
    straight_home = tmp_path / "straight"
    straight = rlx("run", "--config", str(home / "sweeps" / sweep["id"] / "configs" / f"{cut}.json"),
                   "--no-progress", "--no-tracking", home=straight_home, cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a = _final(straight_home, json.loads(rlx("runs", "list", "--json", home=straight_home).stdout)[0]["id"])
    b = _final(home, cut)
    assert a.keys() == b.keys() and len(a) > 5
    for name, value in a.items():
        assert abs(value - b[name]) <= 1e-6, (name, value, b[name])


def test_a_failed_run_does_not_stop_the_others_and_retry_reruns_it(tmp_path):
    home = tmp_path / "home"
    spec = tmp_path / "fail.toml"
    # passes validation (any string is an env id) but fails when the run builds its environment
    spec.write_text('seeds = 1\n[base]\nenv = "gym"\nrun = { steps = 1, threads = 1, eval_every = 0 }\n'
                    '[axes]\n"env.id" = ["CartPole-v1", "NoSuchEnv-v9"]\n')
    proc = rlx("sweep", str(spec), "--max-parallel", "2", "--no-live", "--no-tracking", home=home, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "FAILED" in proc.stdout and "1 finished, 1 failed" in proc.stdout
    failed_line = next(ln for ln in proc.stdout.splitlines() if "env.id=NoSuchEnv-v9 s0: FAILED" in ln)
    assert "NoSuchEnv" in failed_line and "(log: " in failed_line
    assert "rlx sweep resume" in proc.stdout and "--retry-failed" in proc.stdout
    sweep = _sweep(home)
    assert sweep["status"] == "FAILED"
    before = {r["cell"]: r for r in _show(home, sweep["id"])["runs"]}

    plain = rlx("sweep", "resume", sweep["id"], home=home, cwd=tmp_path)
    assert plain.returncode == 2 and "--retry-failed" in plain.stderr  # nothing else to do
    retried = rlx("sweep", "resume", sweep["id"], "--retry-failed", "--no-live", home=home, cwd=tmp_path)
    assert retried.returncode == 1  # it fails again, as a new run
    after = {r["cell"]: r for r in _show(home, sweep["id"])["runs"]}
    cell = "env.id=NoSuchEnv-v9"
    assert after[cell]["run_id"] != before[cell]["run_id"] and after[cell]["status"] == "FAILED"
    assert after["env.id=CartPole-v1"] == before["env.id=CartPole-v1"]  # the finished one untouched
