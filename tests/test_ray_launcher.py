"""The ``ray`` launcher with real Ray and real (tiny) rlx runs: a private local instance, a
simulated two-node cluster, signals passed on to runs, a SIGKILLed driver; and, without
Ray, its config, its signal forwarding and the keeper process between a task and its run.

One Ray instance per test class (a start costs ~5 s here); every run is a CartPole PPO
run of a few steps, or a long one stopped by a signal."""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlx.config import validate_section
from rlx.errors import ConfigError, UsageError
from rlx.launcher import RunExit, RunRequest
from rlx.plugins.ray_launcher.config import RayLauncherConfig

pytest.importorskip("ray")
# one worker runs every Ray test: address="auto" would find another worker's cluster
pytestmark = pytest.mark.one_at_a_time("ray")

from rlx.plugins.ray_launcher import launcher as ray_launcher  # noqa: E402
from rlx.plugins.ray_launcher.launcher import NodeResult, RayLauncher  # noqa: E402

RUN = ["run", "--env", "gym", "--no-progress", "--set", "run.threads=1", "--set", "run.eval_every=0"]
UNTRACKED = [*RUN, "--no-tracking"]  # MLflow's imports and writes: ~4 s of each run here


def _request(home: Path, steps: int, *extra: str, track: bool = False) -> RunRequest:
    run_id = uuid.uuid4().hex[:12]
    argv = [*(RUN if track else UNTRACKED), "--steps", str(steps), *extra]
    return RunRequest(run_id, f"steps={steps} {run_id[:4]}", argv,
                      {"RLX_HOME": str(home), "RLX_RUN_ID": run_id}, home / "logs" / f"{run_id}.log")


def _show(home: Path, run_id: str) -> dict | None:
    out = subprocess.run([sys.executable, "-m", "rlx.cli.main", "runs", "show", run_id, "--json"],
                         capture_output=True, text=True, env={**os.environ, "RLX_HOME": str(home)}).stdout
    return json.loads(out) if out.lstrip().startswith("{") else None


def _wait_running(home: Path, run_id: str, timeout: float = 90) -> dict:
    """The run's catalog row once it trains (its signal handlers are in place by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _show(home, run_id)
        if row and row["status"] == "RUNNING":
            return row
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not start within {timeout} s")


def _wait_exits(launcher: RayLauncher, n: int, timeout: float = 120) -> dict[str, RunExit]:
    ended: dict[str, RunExit] = {}
    deadline = time.monotonic() + timeout
    while len(ended) < n and time.monotonic() < deadline:
        ended.update((e.run_id, e) for e in launcher.poll())
        time.sleep(0.2)
    assert len(ended) == n, f"{len(ended)} of {n} runs ended within {timeout} s"
    return ended


def _checkpoints(home: Path, run_id: str) -> list[str]:
    folder = home / "runs" / run_id / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ---- without Ray: config, registration, forwarding, the keeper --------------------------------


def test_bad_settings_are_one_line_config_errors():
    for settings, words in [({"cpus_per_run": 0}, "launcher.cpus_per_run"),
                            ({"address": "ray:/head:10001"}, "not a Ray address"),
                            ({"address": "auto", "num_cpus": 4}, "private local instance only"),
                            ({"adress": "auto"}, "launcher.adress")]:
        with pytest.raises(ConfigError) as err:
            validate_section("launcher", RayLauncherConfig, settings)
        assert words in str(err.value) and "\n" not in str(err.value)
    cfg = validate_section("launcher", RayLauncherConfig, {"address": " auto ", "cpus_per_run": 3})
    assert cfg.address == "auto" and RayLauncher(cfg).threads_per_run(8) == 3


def test_registered_by_import_path_without_importing_ray():
    code = ("import sys; from rlx.registry.plugins import Registry; s = Registry().get('launcher', 'ray'); "
            "print(s.factory, s.config.__name__, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["rlx.plugins.ray_launcher.launcher:RayLauncher", "RayLauncherConfig", "False"]


def test_an_unreachable_address_fails_at_once_in_one_line(monkeypatch):
    start = time.monotonic()
    with pytest.raises(UsageError) as err:
        RayLauncher(RayLauncherConfig(address="127.0.0.1:1")).open(None)
    message = str(err.value)
    assert "127.0.0.1:1" in message and "ray start --head" in message and "\n" not in message
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # what "auto" resolves to first
    with pytest.raises(UsageError, match=r"at auto \(.+:1\).*launcher\.address"):
        RayLauncher(RayLauncherConfig(address="auto")).open(None)
    assert time.monotonic() - start < 20  # ray.init alone would retry for minutes


def test_capacity_counts_runs_node_by_node():
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 5.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    fake_ray = SimpleNamespace(nodes=lambda: nodes)

    def capacity(**settings) -> int:
        return RayLauncher(RayLauncherConfig(address="auto", **settings))._capacity(fake_ray)

    assert capacity(cpus_per_run=2) == 4 + 2  # a run never spans nodes: 5 CPUs fit two, not two and a half
    assert capacity(cpus_per_run=2, gpus_per_run=1) == 2  # the GPU node only, two GPUs
    assert capacity(cpus_per_run=1, gpus_per_run=0.5) == 4  # half a GPU each
    with pytest.raises(UsageError, match=r"^no node .* \(16 CPUs; the largest has 8 CPUs\); lower launcher"):
        capacity(cpus_per_run=16)


_RECORDER = """
import signal, sys, time
out = sys.argv[1]
def note(signum, frame):
    with open(out, "a") as f:
        f.write(f"{signum}\\n")
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, note)
open(out + ".ready", "w").close()
while True:
    got = open(out).read().split()
    if len(got) >= 2:
        sys.exit(7)
    time.sleep(0.05)
"""


def _recording_task(tmp_path: Path, board: object) -> tuple[object, subprocess.Popen, Path]:
    """A Ray stand-in whose board is ``board``, and a run that records each signal it gets
    (exiting 7 after two), started and ready."""
    fake_ray = SimpleNamespace(get=lambda value, timeout=None: value,
                               get_actor=lambda name: SimpleNamespace(read=SimpleNamespace(remote=board.read)))
    out = tmp_path / "signals"
    out.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", _RECORDER, str(out)], preexec_fn=ray_launcher._preexec())
    deadline = time.monotonic() + 60
    while not Path(str(out) + ".ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return fake_ray, proc, out


def test_forwarding_passes_each_signal_once_even_without_a_second_interrupt(tmp_path):
    """The task's wait loop: a first signal arrives as KeyboardInterrupt (what ray.cancel
    raises), a second only on the board, which the task reads every two seconds."""
    board = ray_launcher._SignalBoard()
    fake_ray, proc, out = _recording_task(tmp_path, board)

    def controller() -> None:
        time.sleep(0.3)
        board.send(["r1"], signal.SIGINT)
        _thread.interrupt_main()  # as ray.cancel(force=False) does in the worker
        time.sleep(0.5)
        board.send(["r1"], signal.SIGTERM)

    threading.Thread(target=controller, daemon=True).start()
    ray_launcher._wait_forwarding(fake_ray, proc, "board", "r1")
    assert proc.returncode == 7 and out.read_text().split() == [str(int(signal.SIGINT)), str(int(signal.SIGTERM))]


def test_signals_read_together_are_passed_on_in_order(tmp_path):
    """A task whose main thread reads the board only after the controller sent both
    signals (a loaded machine) passes on SIGINT then SIGTERM, not the latest twice."""
    board = ray_launcher._SignalBoard()
    board.send(["r1"], signal.SIGINT)
    board.send(["r1"], signal.SIGTERM)
    fake_ray, proc, out = _recording_task(tmp_path, board)
    ray_launcher._wait_forwarding(fake_ray, proc, "board", "r1", wakeups=1)
    assert proc.returncode == 7 and out.read_text().split() == [str(int(signal.SIGINT)), str(int(signal.SIGTERM))]


_CHILD = """
import os, signal, sys, time
out = sys.argv[1]
def note(signum, frame):
    with open(out, "a") as f:
        f.write(f"{signum}\\n")
    if signum == signal.SIGTERM:
        sys.exit(143)
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
with open(out + ".pid", "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


def test_the_keeper_ignores_group_signals_and_its_death_stops_the_run(tmp_path):
    """Ray SIGKILLs a dying worker's children: the keeper takes that, the run gets SIGTERM."""
    out = tmp_path / "signals"
    keeper = subprocess.Popen([sys.executable, "-c", ray_launcher._KEEPER, str(os.getpid()),
                               sys.executable, "-c", _CHILD, str(out)], preexec_fn=ray_launcher._preexec())
    pid_file = Path(str(out) + ".pid")
    deadline = time.monotonic() + 20
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.killpg(keeper.pid, signal.SIGINT)  # the controller's signal, to the group: the run notes it
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert keeper.poll() is None
    keeper.kill()
    keeper.wait()
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text().split() == [str(int(signal.SIGINT)), str(int(signal.SIGTERM))]


def _gone(pid: int) -> bool:
    """Ended: no process, or a zombie nobody reaps (in a container whose pid 1 does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def test_a_log_left_on_another_node_is_written_here_from_its_tail(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"earlier attempt\n")
    ray_launcher._keep_log(log, NodeResult(0, "n", "node-b", log_size=5000, log_start=1000, log_live=True,
                                           log_tail=b"last lines\n"))
    text = log.read_text()
    assert text.startswith("earlier attempt\n[rlx ray launcher: the first 3989 bytes") and "node-b" in text
    assert text.endswith("last lines\n")
    size = log.stat().st_size  # written there by the node itself (same disk): left alone
    ray_launcher._keep_log(log, NodeResult(0, "n", "h", log_size=size, log_start=0, log_live=True, log_tail=b"x"))
    assert log.stat().st_size == size


# ---- a private local instance -----------------------------------------------------------------


@pytest.fixture(scope="class")
def launcher():
    """Started with SIGINT ignored, as a sweep started from a background shell (``&``) is:
    Ray's processes inherit that, and a run must still get the sweep's signals."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        launcher = RayLauncher(RayLauncherConfig(num_cpus=2))
        assert launcher.open(None) == 2  # two CPUs, one per run
    finally:
        signal.signal(signal.SIGINT, before)
    yield launcher
    launcher.close()
    import ray

    assert not ray.is_initialized()  # it started the instance: it stopped it


@pytest.mark.slow
class TestPrivateInstance:
    def test_two_runs_finish_with_their_logs(self, launcher, tmp_path):
        requests = [_request(tmp_path, 3, track=True), _request(tmp_path, 3, track=True)]
        for r in requests:
            launcher.submit(r)
        ended = _wait_exits(launcher, 2)
        for r in requests:
            assert ended[r.run_id].code == 0
            row = _show(tmp_path, r.run_id)
            assert row["status"] == "FINISHED" and row["mlflow_run_id"]
            assert f"run {r.run_id} FINISHED" in r.log_path.read_text()
            assert r.log_path.read_text().count("FINISHED") == 1  # written once, by the node, not again here

    def test_a_signal_checkpoints_and_kills_the_run_and_a_failed_run_is_reported(self, launcher, tmp_path):
        long, bad = _request(tmp_path, 5000), _request(tmp_path, 3, "--set", "run.steps=-1")
        launcher.submit(long)
        launcher.submit(bad)
        ended = _wait_exits(launcher, 1)
        assert ended[bad.run_id].code == 2 and "run.steps" in bad.log_path.read_text()
        _wait_running(tmp_path, long.run_id)  # not stopped by its neighbour's failure
        time.sleep(1)
        launcher.signal(signal.SIGINT)
        assert _wait_exits(launcher, 1, timeout=60)[long.run_id].code == 130
        row = _show(tmp_path, long.run_id)
        assert row["status"] == "KILLED" and _checkpoints(tmp_path, long.run_id)
        log = long.log_path.read_text()
        assert log.count("SIGINT: finishing the step") == 1 and "stopped at once" not in log  # passed on once

    def test_room_for_no_run_is_said_in_one_line(self):
        with pytest.raises(UsageError, match=r"room for one run \(3 CPUs; the largest has 2 CPUs\)"):
            RayLauncher(RayLauncherConfig(cpus_per_run=3)).open(None)  # on the instance already up: kept
        other = RayLauncher(RayLauncherConfig())
        assert other.open(5) == 5  # --max-parallel wins
        other.close()


# ---- a simulated two-node cluster -------------------------------------------------------------

_DRIVER = """
import sys, time
from pathlib import Path
from rlx.launcher import RunRequest
from rlx.plugins.ray_launcher.config import RayLauncherConfig
from rlx.plugins.ray_launcher.launcher import RayLauncher
address, home, run_id = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
launcher = RayLauncher(RayLauncherConfig(address=address))
launcher.open(1)
launcher.submit(RunRequest(run_id, "long", {run}, {{"RLX_HOME": str(home), "RLX_RUN_ID": run_id}},
                           home / "logs" / f"{{run_id}}.log"))
time.sleep(600)
"""


@pytest.fixture(scope="class")
def cluster():
    """A head and a worker node of one CPU each, both on this machine."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.slow
class TestCluster:  # two runs on the two nodes: tests/test_sweep_ray.py, through rlx sweep
    def test_a_killed_driver_leaves_no_run_behind(self, cluster, tmp_path):
        """SIGKILL the sweep's process: Ray ends its job's workers, the keeper dies with its
        worker, and the run gets SIGTERM: it checkpoints and ends KILLED, no orphan."""
        run_id = uuid.uuid4().hex[:12]
        script = tmp_path / "driver.py"
        script.write_text(_DRIVER.format(run=[*UNTRACKED, "--steps", "100000"]))
        driver = subprocess.Popen([sys.executable, str(script), cluster.address, str(tmp_path), run_id])
        try:
            pid = _wait_running(tmp_path, run_id)["pid"]
            time.sleep(2)
        finally:
            driver.kill()
            driver.wait()
        deadline = time.monotonic() + 60
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _gone(pid), "the run outlived its sweep's driver by 60 s"
        row = _show(tmp_path, run_id)
        assert row["status"] == "KILLED" and _checkpoints(tmp_path, run_id)
