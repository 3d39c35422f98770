"""Every way a process ends, sent for real to real ``rlx run`` process groups: the run's
status in the catalog and in MLflow agree, the step in flight is kept (or the newest
checkpoint is the resume point), and after ``rlx runs resume`` every step is present
exactly once. The README's signal table states what these tests check."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
from _cli import make_plugin, rlx, start

pytestmark = [pytest.mark.slow, pytest.mark.writer_process]

STEPS = 6
SMALL = ["--steps", str(STEPS), "--set", "run.batch_size=2", "--set", "objective.num_generations=2",
         "--set", "run.eval_every=3", "--set", "env.eval_size=8", "--set", "generation.max_new_tokens=16",
         "--set", "run.checkpoint_every=2", "--no-progress"]

# signals the run's own process group (a terminal's Ctrl-C, a scheduler's SIGTERM, a closed
# terminal's SIGHUP) at the end of a chosen step, optionally a second time once the first is noted
SIGNALLER = textwrap.dedent('''
    import os, signal, time
    from rlx.hookspecs import hookimpl

    def _send(sig):
        os.killpg(os.getpgid(0), sig)

    @hookimpl
    def rlx_step_end(step, metrics):
        if os.environ.get("RLX_TEST_SIGNAL_AT") != str(step):
            return
        sig = getattr(signal, os.environ["RLX_TEST_SIGNAL"])
        if os.environ.get("RLX_TEST_KILL_WRITER"):
            import psutil
            for p in psutil.Process().children(recursive=True):
                if "rlx.tracking_writer" in " ".join(p.cmdline()):
                    p.kill()
        if sig == signal.SIGKILL:
            os.kill(os.getpid(), sig)
        _send(sig)
        if os.environ.get("RLX_TEST_SECOND"):
            # the first handler runs as the sleep starts, so the second signal finds the first
            # noted; a timer thread instead raced the run's own end and sometimes lost
            time.sleep(0.01)
            _send(sig)
            time.sleep(0.01)
''')

# a policy whose final save takes a while, so that a signal can land in the middle of it
SLOW_SAVE = textwrap.dedent('''
    import os, time
    from pathlib import Path
    from rlx.hookspecs import hookimpl
    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    class SlowSave(TinyPolicy):
        def save(self, path):
            if os.environ.get("RLX_TEST_MARKER"):  # a resume saves at once
                Path(os.environ["RLX_TEST_MARKER"]).write_text("saving")
                time.sleep(float(os.environ.get("RLX_TEST_SAVE_S", "4")))
            super().save(path)

    @hookimpl
    def rlx_register_policies(register):
        register("slowsave", SlowSave, config=TinyConfig, interface="lm", requires=("hf",))
''')

# the lines rlx itself prints on a run's stderr and stdout; anything else is a dependency talking
OWN = ("step ", "run ", "  mlflow run ", "  policy saved", "  reward model saved", "  tracking off", "error: ",
       "warning: ", "note: ", "resuming run ", "SIGINT: ", "SIGTERM: ", "SIGHUP: ")


def _own_lines_only(*outputs: str) -> None:
    for out in outputs:
        for line in out.splitlines():
            assert not line.strip() or line.startswith(OWN), f"not an rlx line: {line!r}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_plugin(root, "signaller", SIGNALLER)
    make_plugin(root, "slowsave", SLOW_SAVE)
    return root


def _start(home: Path, site: Path, *args: str, **env: str):
    """``rlx run`` as a terminal or a scheduler starts it: a process group of its own."""
    return start(*args, home=home, paths=[site], session=True, **env)


def _catalog_run(home: Path, site: Path) -> dict:
    out = rlx("runs", "list", "--json", home=home, paths=[site])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def _mlflow(home: Path, run: dict):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    return client, client.get_run(run["mlflow_run_id"])


def _agree(home: Path, site: Path, status: str) -> dict:
    """The catalog says ``status`` and MLflow says the same (CRASHED is FAILED there, tagged)."""
    run = _catalog_run(home, site)
    _, mrun = _mlflow(home, run)
    assert run["status"] == status, run
    assert mrun.info.status == {"CRASHED": "FAILED"}.get(status, status), (mrun.info.status, run)
    assert mrun.data.tags.get("rlx.status") == status
    if status != "FINISHED":
        assert mrun.data.tags.get("rlx.error") == run["error"]
    return run


def _steps(home: Path, run: dict, key: str = "reward/mean") -> list[int]:
    client, _ = _mlflow(home, run)
    return sorted(m.step for m in client.get_metric_history(run["mlflow_run_id"], key))


def _resume_to_the_end(home: Path, site: Path, run: dict) -> dict:
    proc = rlx("runs", "resume", run["id"], "--no-progress", home=home, paths=[site])
    assert proc.returncode == 0, proc.stderr
    _own_lines_only(proc.stdout, proc.stderr)
    done = _agree(home, site, "FINISHED")
    assert _steps(home, done) == list(range(1, STEPS + 1))  # every step, each once
    assert _steps(home, done, "eval/accuracy") == [0, 3, STEPS]
    client, _ = _mlflow(home, done)
    table = json.loads(Path(client.download_artifacts(done["mlflow_run_id"], "samples/generations.json",
                                                      str(home / "dl"))).read_text())
    rows = [json.dumps(r) for r in table["data"]]
    assert rows and len(rows) == len(set(rows)), "samples table holds duplicate rows"
    assert Path(done["policy_dir"], "config.json").is_file()
    return done


@pytest.mark.parametrize("name,code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_first_signal_checkpoints_the_step_in_flight_and_ends_killed(tmp_path, site, name, code):
    proc = _start(tmp_path, site, "run", *SMALL, RLX_TEST_SIGNAL_AT="3", RLX_TEST_SIGNAL=name)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == code, err
    _own_lines_only(out, err)
    assert "Traceback" not in err and f"KILLED: interrupted by {name} after step 3" in err
    run = _agree(tmp_path, site, "KILLED")
    assert Path(run["checkpoint"]).name == "step_00000003"  # the step in flight, checkpointed
    assert _steps(tmp_path, run) == [1, 2, 3]  # its metrics were stored: the writer outlived the signal
    if name == "SIGINT":  # the same resume follows each of them; once is enough
        _resume_to_the_end(tmp_path, site, run)


def test_second_signal_stops_at_once_and_resumes_from_the_newest_checkpoint(tmp_path, site):
    proc = _start(tmp_path, site, "run", *SMALL, RLX_TEST_SIGNAL_AT="3", RLX_TEST_SIGNAL="SIGINT",
                  RLX_TEST_SECOND="1")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "second signal" in err and "Traceback" not in err
    run = _agree(tmp_path, site, "KILLED")
    newest = Path(run["checkpoint"]).name
    assert newest == "step_00000002"  # the second signal came before the step-3 checkpoint
    assert f"continues it from step {int(newest[5:])}" in run["error"]
    _resume_to_the_end(tmp_path, site, run)


def test_sigkill_ends_crashed_in_both_stores_without_any_rlx_command(tmp_path, site):
    proc = _start(tmp_path, site, "run", *SMALL, RLX_TEST_SIGNAL_AT="3", RLX_TEST_SIGNAL="SIGKILL")
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    import sqlite3

    from mlflow.tracking import MlflowClient

    # the writer process saw its training process vanish and recorded it in both stores
    deadline = time.time() + 60
    while time.time() < deadline:
        with sqlite3.connect(tmp_path / "catalog.db") as con:
            status, mlflow_id = con.execute("select status, mlflow_run_id from runs").fetchone()
        mstatus = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").get_run(mlflow_id).info.status
        if status == "CRASHED" and mstatus == "FAILED":
            break
        time.sleep(0.5)
    run = _agree(tmp_path, site, "CRASHED")
    # SIGKILL leaves no time: the step whose metrics were still in the training process
    # (handed to the writer about once a second) is not stored, and the resume trains it again
    assert _steps(tmp_path, run) in ([1, 2], [1, 2, 3])
    _resume_to_the_end(tmp_path, site, run)


def test_sigkill_of_run_and_writer_is_reaped_in_both_stores(tmp_path, site):
    proc = _start(tmp_path, site, "run", *SMALL, RLX_TEST_SIGNAL_AT="3", RLX_TEST_SIGNAL="SIGKILL",
                  RLX_TEST_KILL_WRITER="1")
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    run = _agree(tmp_path, site, "CRASHED")  # `rlx runs list` found the process gone
    # what the step-2 checkpoint covers was stored before it was written; step 3 if the
    # training process wrote it itself before it died
    assert _steps(tmp_path, run) in ([1, 2], [1, 2, 3])


@pytest.mark.parametrize("times", [1, 2])
def test_signal_during_the_final_save(tmp_path, site, times):
    marker = tmp_path / "saving"
    proc = _start(tmp_path, site, "run", *SMALL, "--policy", "slowsave", RLX_TEST_MARKER=str(marker))
    deadline = time.time() + 600
    while not marker.exists():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    for _ in range(times):
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)
    out, err = proc.communicate(timeout=600)
    if times == 1:  # the save finishes: the run is complete
        assert proc.returncode == 0, err
        assert "the final policy is being saved" in err and "it FINISHED" in err
        run = _agree(tmp_path, site, "FINISHED")
        assert Path(run["policy_dir"], "config.json").is_file()
    else:  # aborted: KILLED in both stores, resumable from the final step's checkpoint
        assert proc.returncode == 130, err
        run = _agree(tmp_path, site, "KILLED")
        assert "while the final policy was being saved" in run["error"]
        assert Path(run["checkpoint"]).name == f"step_{STEPS:08d}"
        _resume_to_the_end(tmp_path, site, run)


def test_two_resumes_at_once_run_it_once(tmp_path, site):
    proc = _start(tmp_path, site, "run", *SMALL, RLX_TEST_SIGNAL_AT="2", RLX_TEST_SIGNAL="SIGTERM")
    proc.communicate(timeout=600)
    run = _agree(tmp_path, site, "KILLED")
    racers = [start("runs", "resume", run["id"], "--no-progress", home=tmp_path, paths=[site]) for _ in range(2)]
    results = [(p.wait(timeout=600), p.communicate()[1]) for p in racers]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "took it first" in loser or "still running" in loser, loser
    done = _agree(tmp_path, site, "FINISHED")
    assert _steps(tmp_path, done) == list(range(1, STEPS + 1))


FAILING_START = textwrap.dedent('''
    from rlx.hookspecs import hookimpl

    @hookimpl
    def rlx_run_start(run_id, config):
        raise RuntimeError("observer could not start")
''')


def test_a_raising_run_start_hook_ends_failed_in_both_stores(tmp_path):
    site = make_plugin(tmp_path / "site", "failstart", FAILING_START)
    proc = rlx("run", *SMALL, home=tmp_path, paths=[site])
    assert proc.returncode == 1 and "observer could not start" in proc.stderr and "Traceback" not in proc.stderr
    _agree(tmp_path, site, "FAILED")


POISON = textwrap.dedent('''
    import torch
    from rlx.hookspecs import hookimpl
    from rlx.plugins.grpo.config import GRPOConfig
    from rlx.plugins.grpo.objective import GRPO

    class Poison(GRPO):
        """Training that ends with NaN weights, as an lr far too high would."""
        calls = 0
        def prepare(self, batch, policy, reference):
            Poison.calls += 1
            if Poison.calls == 3:
                with torch.no_grad():
                    next(policy.model.parameters()).fill_(float("nan"))
            return super().prepare(batch, policy, reference)

    @hookimpl
    def rlx_register_objectives(register):
        register("poison", Poison, config=GRPOConfig, accepts=("text",))
''')


def test_nan_weights_end_failed_and_are_not_saved_as_the_policy(tmp_path):
    site = make_plugin(tmp_path / "site", "poison", POISON)
    proc = rlx("run", "--objective", "poison", "--reward", "verifier", *SMALL, home=tmp_path, paths=[site])
    assert proc.returncode == 1, proc.stderr
    assert "NaN or Inf" in proc.stderr and "optim.lr" in proc.stderr
    run = _agree(tmp_path, site, "FAILED")
    assert run["policy_dir"] == "" and not (tmp_path / "runs" / run["id"] / "policy").exists()
