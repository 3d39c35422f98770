"""Honest status: a raising run ends FAILED, Ctrl-C ends KILLED, in MLflow and the catalog."""

from __future__ import annotations

import json
import signal
import sqlite3
import textwrap
import time
from pathlib import Path

import pytest
from _cli import make_plugin, rlx, start

pytestmark = pytest.mark.slow

SMALL = ["--set", "run.batch_size=2", "--set", "objective.num_generations=2", "--set", "run.eval_every=0",
         "--set", "env.eval_size=16", "--set", "generation.max_new_tokens=24", "--no-progress"]

FAULTY = textwrap.dedent('''
    import torch
    from rlx.hookspecs import hookimpl
    from rlx.reward import RewardSource

    class Faulty(RewardSource):
        calls = 0
        def score(self, batch):
            Faulty.calls += 1
            if Faulty.calls >= 2:
                raise RuntimeError("scorer crashed on purpose")
            return torch.zeros(len(batch))

    @hookimpl
    def rlx_register_rewards(register):
        register("faulty", Faulty, granularity="outcome")
''')


def _mlflow_run(home, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def _mlflow_status(home, experiment):
    return _mlflow_run(home, experiment).info.status


def test_exception_ends_failed(tmp_path):
    site = make_plugin(tmp_path / "site", "faulty", FAULTY)
    proc = rlx("run", "--reward", "faulty", "--steps", "5", "--experiment", "fail", *SMALL, home=tmp_path,
               paths=[site])
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "scorer crashed on purpose" in errors[0] and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert _mlflow_status(tmp_path, "fail") == "FAILED"
    runs = json.loads(rlx("runs", "list", "--json", home=tmp_path, paths=[site]).stdout)
    assert runs[0]["status"] == "FAILED" and "scorer crashed" in runs[0]["error"]
    # the run's description in the MLflow UI says why, where it stopped and that nothing can be resumed
    note = _mlflow_run(tmp_path, "fail").data.tags["mlflow.note.content"].splitlines()
    assert note[1].startswith("**FAILED**: ") and "scorer crashed on purpose" in note[1], note
    assert "- last step logged: 1" in note and any("no checkpoint" in ln for ln in note), note


def test_ctrl_c_ends_killed(tmp_path):
    proc = start("run", "--reward", "verifier", "--steps", "100000", "--experiment", "kill", *SMALL, home=tmp_path)
    db = tmp_path / "catalog.db"
    deadline = time.time() + 180
    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("select count(*) from runs").fetchone()[0]:
                        break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.5)
    time.sleep(3)  # a few training steps
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KILLED" in err
    assert _mlflow_status(tmp_path, "kill") == "KILLED"
    runs = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)
    assert runs[0]["status"] == "KILLED"
    # Ctrl-C finished the step in flight and checkpointed it: the run can continue
    assert Path(runs[0]["checkpoint"], "loop_state.json").is_file()
    assert "rlx runs resume" in runs[0]["error"]
    # and the MLflow UI's description of the run says so: reason, step, checkpoint, command
    step = int(Path(runs[0]["checkpoint"]).name.split("_")[-1])
    note = _mlflow_run(tmp_path, "kill").data.tags["mlflow.note.content"]
    assert note.splitlines()[1].startswith("**KILLED**: interrupted by SIGINT"), note
    assert f"- last step logged: {step}" in note and f"checkpoint: step {step}, `{runs[0]['checkpoint']}`" in note
    assert f"- resume: `rlx runs resume {runs[0]['id']}`" in note


NONFINITE = textwrap.dedent('''
    import math, torch
    from rlx.hookspecs import hookimpl
    from rlx.reward import RewardSource

    class Spiky(RewardSource):
        calls = 0
        def score(self, batch):
            Spiky.calls += 1
            value = math.inf if Spiky.calls == 2 else 1.0
            return torch.full((len(batch),), value)

    @hookimpl
    def rlx_register_rewards(register):
        register("spiky", Spiky)
''')


def test_nonfinite_reward_is_skipped_and_counted(tmp_path):
    site = make_plugin(tmp_path / "site", "spiky", NONFINITE)
    proc = rlx("run", "--reward", "spiky", "--reward", "verifier", "--steps", "4", "--experiment", "spiky",
               *SMALL, home=tmp_path, paths=[site])
    assert proc.returncode == 0, proc.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("spiky").experiment_id])[0]
    skipped = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "nonfinite/skipped"))
    assert skipped == [(1, 0.0), (2, 1.0), (3, 1.0), (4, 1.0)]
    loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/policy")]
    assert sorted(loss_steps) == [1, 3, 4]  # step 2 took no update
