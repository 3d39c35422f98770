"""``rlx ui`` serves the MLflow UI on the rlx store and stops all of it.

MLflow's server is a tree (the ``mlflow`` CLI, uvicorn and its workers, a job runner and
its huey consumers); every way of stopping ``rlx ui`` must take the whole tree and the
port with it. MLFLOW_WORKERS=2 keeps uvicorn's supervisor-and-workers shape at half the
start-up cost of MLflow's default of 4.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest
from _cli import cli_env, rlx

pytestmark = pytest.mark.slow

START_S = 240  # MLflow's start-up on two busy cores
STOP_S = 30  # rlx ui's grace for SIGTERM before SIGKILL is 5 s
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a server
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Ui:
    """``rlx ui`` in a session of its own, as a shell would start it, output in files
    (a pipe nobody reads could stall a server that floods it)."""

    def __init__(self, home: Path, *args: str, **env: str) -> None:
        self.home, self.port = home, _free_port()
        self.out, self.err = home / "ui.out", home / "ui.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "rlx.cli.main", "ui", "--port", str(self.port), *args],
                                         env=cli_env(home, MLFLOW_WORKERS="2", **env), cwd=home, stdout=out, stderr=err,
                                         start_new_session=True)
        self.tree: list[psutil.Process] = []

    def wait_until_serving(self) -> str:
        deadline = time.time() + START_S
        while time.time() < deadline:
            try:
                with _DIRECT.open(f"http://127.0.0.1:{self.port}/ajax-api/2.0/mlflow/experiments/search"
                                  "?max_results=10", timeout=5) as r:
                    return r.read().decode()
            except (urllib.error.URLError, OSError):
                assert self.proc.poll() is None, f"rlx ui exited {self.proc.returncode}: {self.output()}"
                time.sleep(0.5)
        pytest.fail(f"no answer in {START_S} s: {self.output()}")

    def snapshot_tree(self, settle_s: float = 3.0) -> list[psutil.Process]:
        """Every process under rlx ui, a moment after it answers: MLflow's job runner starts
        its consumers late (any started after this are still found, by their group)."""
        time.sleep(settle_s)
        self.tree = psutil.Process(self.proc.pid).children(recursive=True)
        assert self.tree, "rlx ui started no server"
        return self.tree

    def stop_and_wait(self, sig: int, group: bool = False) -> int:
        if group:
            os.killpg(self.proc.pid, sig)  # what a terminal does on Ctrl-C
        else:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rlx ui still running {STOP_S} s after {signal.Signals(sig).name}: {self.output()}")

    def alive(self) -> list[str]:
        """The snapshot's processes, and any late member of their groups, still running."""
        groups = set()
        for p in self.tree:
            try:
                groups.add(os.getpgid(p.pid))
            except OSError:
                pass
        found = {p.pid: p for p in self.tree}
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) in groups - {os.getpgid(0)}:
                    found.setdefault(p.pid, p)
            except (OSError, psutil.Error):
                pass
        out = []
        for p in found.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            except psutil.Error:
                pass
        return out

    def wait_all_gone(self, timeout: float = 5.0) -> list[str]:
        deadline = time.time() + timeout
        while (left := self.alive()) and time.time() < deadline:
            time.sleep(0.2)
        return left

    def wait_for_line(self, text: str, timeout: float = 10.0) -> list[str]:
        deadline = time.time() + timeout
        while True:
            lines = self.out.read_text().splitlines()
            if any(text in line for line in lines):
                return lines
            assert time.time() < deadline, f"no line with {text!r} in {timeout} s: {self.output()}"
            time.sleep(0.2)

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def kill_all(self) -> None:
        """Whatever a failing test left behind (today's bug: the whole server)."""
        if not self.tree:
            try:
                self.tree = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                pass
        groups = {self.proc.pid}  # its own session, where today's server stays
        for p in self.tree:
            try:
                groups.add(os.getpgid(p.pid))
            except OSError:
                pass
        for g in groups - {os.getpgid(0)}:
            try:
                os.killpg(g, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait()


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[Callable[..., Ui]]:
    started: list[Ui] = []

    def start(*args: str, **env: str) -> Ui:
        started.append(Ui(tmp_path, *args, **env))
        return started[-1]

    yield start
    for u in started:
        u.kill_all()


def test_ui_serves_the_store_and_keeps_mlflow_logs_out_of_the_terminal(ui, tmp_path):
    from mlflow.tracking import MlflowClient

    # the store as `rlx run` leaves it: the URL opens the runs table of the newest run's experiment
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    older, exp_id = (client.create_experiment(name, artifact_location=str(tmp_path / "mlartifacts" / name))
                     for name in ("rlx/CartPole-v1", "rlx/arithmetic"))
    client.create_run(older, start_time=1000)
    client.create_run(exp_id, start_time=2000)
    # --open hands the link to the browser named by $BROWSER (here a script that keeps it)
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    u = ui("--open", BROWSER=str(browser))
    assert "experiments" in u.wait_until_serving()
    lines = u.wait_for_line("MLflow UI at")  # rlx ui's own check that it answers comes a moment later
    log = tmp_path / "logs" / f"ui-{u.port}.log"
    assert lines[0].endswith(f"server log: {log}"), lines
    assert lines[1].startswith(f"MLflow UI at http://127.0.0.1:{u.port}/#/experiments/{exp_id}/runs"
                               "?viewStateShareKey=rlx&workflowType=machine_learning "), lines
    deadline = time.time() + 30
    while not opened.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert opened.read_text().strip() == lines[1].split()[3], (opened.read_text(), lines)
    assert "Uvicorn running" in log.read_text()  # MLflow's INFO lines went there...
    assert " INFO" not in u.output() and "GET /" not in u.output(), u.output()  # ...and not to the terminal
    u.snapshot_tree(settle_s=0)
    assert u.stop_and_wait(signal.SIGTERM) == 128 + signal.SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_ui_signal_stops_the_whole_server(ui, sig):
    u = ui()
    u.wait_until_serving()
    tree = u.snapshot_tree()
    assert any("uvicorn" in " ".join(p.cmdline()) for p in tree)
    code = u.stop_and_wait(sig)
    assert not u.wait_all_gone(), f"{len(tree)} processes before {sig.name}; still alive: {u.alive()}"
    assert _port_free(u.port), f"something still listens on {u.port}"
    assert code == 128 + sig, u.output()
    assert u.err.read_text().splitlines() == [f"MLflow UI stopped ({sig.name})"], u.output()


def test_ui_ctrl_c_stops_everything_with_130(ui):
    u = ui()
    u.wait_until_serving()
    tree = u.snapshot_tree()
    code = u.stop_and_wait(signal.SIGINT, group=True)
    assert not u.wait_all_gone(), f"{len(tree)} processes before Ctrl-C; still alive: {u.alive()}"
    assert _port_free(u.port)
    assert code == 130, u.output()
    assert u.err.read_text().splitlines() == ["MLflow UI stopped (SIGINT)"], u.output()  # one line, no error


def test_ui_port_in_use_is_one_error_line_at_once(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t0 = time.time()
        try:
            r = rlx("ui", "--port", str(port), home=tmp_path, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("rlx ui kept running on a taken port")
        took = time.time() - t0
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.splitlines() == [f"error: port {port} on 127.0.0.1 is in use (another rlx ui or MLflow server?); "
                                     "pass --port N or stop the other server"], r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "INFO" not in r.stdout
    assert took < 15, f"{took:.1f} s to say the port is taken"


def test_ui_url_falls_back_to_the_root(tmp_path):
    """Where there is no runs table to open, or it cannot be found cheaply (the served case is above)."""
    from rlx.cli.ui_cmd import _runs_url

    db = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(db)) as con, con:  # the columns of MLflow's own table that the URL reads
        con.execute("CREATE TABLE experiments (experiment_id INTEGER, name TEXT, lifecycle_stage TEXT)")
        con.executemany("INSERT INTO experiments VALUES (?, ?, ?)", [(0, "Default", "active"), (7, "rlx", "deleted")])
    root = "http://127.0.0.1:5000/"
    assert _runs_url(f"sqlite:///{db}", "127.0.0.1", 5000) == root  # deleted
    assert _runs_url(f"sqlite:///{db}", "0.0.0.0", 5000, experiment="Default") == \
        "http://127.0.0.1:5000/#/experiments/0/runs?viewStateShareKey=rlx&workflowType=machine_learning"  # a wildcard is no address
    assert _runs_url(f"sqlite:///{tmp_path}/missing.db", "127.0.0.1", 5000) == root
    assert not (tmp_path / "missing.db").exists()  # looking did not create it
    assert _runs_url("postgresql://db/mlflow", "127.0.0.1", 5000) == root
