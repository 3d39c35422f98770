"""The local launcher's choices (capacity, threads, one GPU per run) and the sweep's live
table, in-process; the real processes and signals are in test_sweep.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rlx.launcher import RunRequest
from rlx.plugins.local_launcher.config import LocalConfig
from rlx.plugins.local_launcher.launcher import LocalLauncher


class _FakeProc:
    def __init__(self, args, env, **kw):
        self.args, self.env, self.pid, self.code = args, env, 0, None

    def poll(self):
        return self.code


def _request(tmp_path: Path, run_id: str) -> RunRequest:
    return RunRequest(run_id, f"cell s{run_id}", ["--version"], {"RLX_RUN_ID": run_id}, tmp_path / f"{run_id}.log")


def test_capacity_threads_and_one_gpu_per_run(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda args, env, **kw: started.append(_FakeProc(args, env)) or started[-1])
    launcher = LocalLauncher(LocalConfig())
    assert launcher.open(None) == 2  # one run per GPU by default
    for i in range(3):
        launcher.submit(_request(tmp_path, f"r{i}"))
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in started] == ["3", "5", "3"]  # the least used GPU first
    assert started[0].args[:3] == [sys.executable, "-m", "rlx.cli.main"] and started[0].env["RLX_RUN_ID"] == "r0"
    started[1].code = 0
    assert [(e.run_id, e.code) for e in launcher.poll()] == [("r1", 0)]
    launcher.submit(_request(tmp_path, "r3"))
    assert started[-1].env["CUDA_VISIBLE_DEVICES"] == "5"  # freed by r1
    started[0].code = -15  # killed by a signal: the shell's code
    assert ("r0", 143) in [(e.run_id, e.code) for e in launcher.poll()]
    for p in started:
        p.code = 0
    launcher.poll()


def test_without_gpus_capacity_is_the_cores_and_threads_are_shared(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    launcher = LocalLauncher(LocalConfig())
    import os

    assert launcher.open(None) == (os.cpu_count() or 1)
    assert launcher.open(3) == 3
    assert launcher.threads_per_run(1) == (os.cpu_count() or 1)
    assert LocalLauncher(LocalConfig(threads_per_run=4)).threads_per_run(2) == 4


def test_a_real_child_is_reported_with_its_exit_code_and_log(tmp_path):
    launcher = LocalLauncher(LocalConfig())
    launcher.open(1)
    launcher.submit(_request(tmp_path, "v1"))
    deadline = time.time() + 60
    ended = []
    while not ended and time.time() < deadline:
        ended = launcher.poll()
        time.sleep(0.1)
    launcher.close()
    assert [(e.run_id, e.code) for e in ended] == [("v1", 0)]
    assert (tmp_path / "v1.log").read_text().strip()  # `rlx --version` wrote its line there


def test_the_live_table_shows_state_step_metric_and_eta():
    from rich.console import Console

    from rlx.sweep import Controller, RunState
    from rlx.sweep_spec import Cell, PlannedRun, SweepSpec

    spec = SweepSpec("demo", {}, [Cell("objective=ppo", {"objective": "ppo"})], [0, 1, 2])
    states = [RunState(PlannedRun(f"{i:012x}", "objective=ppo", {"objective": "ppo"}, i)) for i in range(3)]
    now = time.time()
    states[0].status, states[0].progress = "FINISHED", {"metrics": {"eval/return": 500.0}}
    states[1].status, states[1].started = "RUNNING", now - 10
    states[1].progress = {"step": 10, "steps": 40, "metrics": {"eval/return": 120.5}}

    class Record:
        id, tracking_uri, mlflow_run_id = "abc123abc123", "", ""

    ctl = Controller(Record(), spec, states, None, LocalLauncher(LocalConfig()), 2, live=True)
    console = Console(record=True, width=160)
    console.print(ctl._table())
    text = console.export_text()
    assert "sweep abc123abc123 demo: 1/3 ended" in text
    assert "10/40" in text and "eval/return=120.5" in text and "30s" in text  # 10 s for 10 steps, 30 to go
    assert "FINISHED" in text and "eval/return=500" in text
    assert "... 1 pending" in text
