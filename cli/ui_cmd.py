"""``rlx ui``: the MLflow UI on the rlx store, started and stopped as one unit.

``mlflow ui`` is a tree of processes (the ``mlflow`` CLI, a uvicorn supervisor and its
workers, MLflow's job runner and its huey consumers), and signalling only its top
process leaves the rest serving the port. So the server gets a process group of its
own, and ``rlx ui`` stops that whole group on SIGINT, SIGTERM and SIGHUP. Being in
another group also keeps the terminal's Ctrl-C away from the server: only ``rlx ui``
sees it, and it decides the order of shutdown.

MLflow's output goes to ``RLX_HOME/logs/ui-<port>.log``: its INFO lines and one access
line per request would otherwise bury the URL. Errors still reach the terminal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Optional

import typer

from rlx.errors import RlxError, UsageError
from rlx.interrupts import die_with_parent, handling

GRACE_S = 5.0  # uvicorn waits for open requests on SIGTERM; a browser tab must not keep it alive
# MLflow's and uvicorn's formats: "2026/01/31 12:00:00 ERROR ..." (a level mid-line is a message)
_ERROR = re.compile(r"^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d )?(?:ERROR|CRITICAL)\b")
_IN_USE = re.compile(r"address already in use|Errno 98|Errno 48", re.IGNORECASE)


def ui(port: int = typer.Option(5000, help="Port to serve on."),
       host: str = typer.Option("127.0.0.1", help="Interface; keep 127.0.0.1 unless you mean to share it."),
       tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store to browse."),
       experiment: Optional[str] = typer.Option(None, "--experiment",
                                                help="Link this experiment's runs (default: the newest run's)."),
       open_browser: bool = typer.Option(False, "--open", help="Open the link in a browser once it serves.")) -> None:
    """Start the MLflow UI on the rlx store (Ctrl-C to stop); prints the runs table's link."""
    from rlx import home

    uri = home.tracking_uri(tracking_uri)
    received: list[int] = []
    # before the port check too: a KeyboardInterrupt would reach main(), which speaks of runs
    with handling(lambda signum, _frame: received.append(signum)):
        _check_port(host, port)
        log_path = home.home() / "logs" / f"ui-{port}.log"  # per port: two UIs may run at once
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "wb")
        except OSError as exc:
            raise UsageError(f"cannot write the server log '{log_path}': {exc.strerror}; "
                             "set RLX_HOME to a writable place") from None
        _say(f"starting the MLflow UI for {uri}; server log: {log_path}", err=False)
        code = _serve(uri, host, port, log, log_path, received, experiment, open_browser)
    # SystemExit rather than typer.Exit: for an exit code of 130 main() adds an error line of its own
    raise SystemExit(code)


def _serve(uri: str, host: str, port: int, log: IO[bytes], log_path: Path, received: list[int],
           experiment: str | None = None, open_browser: bool = False) -> int:
    if received:
        log.close()
        return _stopped(received[0])
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    with log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=_server_env(), start_new_session=True,
                                preexec_fn=die_with_parent())
    echo = _ErrorEcho(log_path)
    try:
        ready = False
        while not received and proc.poll() is None:
            if not ready and _answers(host, port):
                ready = True
                echo.release()
                url = _runs_url(uri, host, port, experiment)
                _say(f"MLflow UI at {url}  (Ctrl-C to stop)", err=False)
                if open_browser:
                    _open(url)
            time.sleep(0.2)
    finally:
        # what the workers say while being stopped is not news to whoever stopped them
        echo.stop()
        # whatever ends the loop (a signal, the server exiting, an exception here), nothing
        # of the server may outlive it
        _stop_group(proc)
    if received:
        return _stopped(received[0])
    # the mlflow CLI exits 0 even when uvicorn could not bind, so any exit of its own is a failure
    if any(_IN_USE.search(line) for line in echo.errors):
        raise UsageError(_in_use_message(host, port))
    last = echo.errors[-1].strip() if echo.errors else "no error line"
    when = "stopped" if ready else "exited before it answered"
    raise RlxError(f"the MLflow server {when} (exit code {proc.returncode}): {last}; full log: {log_path}")


def _server_env() -> dict[str, str]:
    # MLflow's job runner (7 huey workers) serves its GenAI features only: off unless asked
    # for, it starts faster and stops with fewer processes to wait on
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}


def _open(url: str) -> None:
    """The system's browser ($BROWSER first, as Python's webbrowser reads it); a machine
    without one gets a line, not an error: the link is printed above."""
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        _say("no browser found to open it (set BROWSER); open the link above by hand")


def _stopped(signum: int) -> int:
    _say(f"MLflow UI stopped ({signal.Signals(signum).name})")
    return 130 if signum == signal.SIGINT else 128 + signum


def _check_port(host: str, port: int) -> None:
    """Fail in a second, with the fix, rather than after MLflow's start-up."""
    import errno
    import socket  # not at the top: every rlx command imports this module

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, OverflowError) as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc}; pass --host and --port that this machine has") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        # as uvicorn does: a port a stopped server left in TIME_WAIT is free for it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(_in_use_message(host, port)) from None
            raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror}; "
                             "pass another --host or --port") from None


def _in_use_message(host: str, port: int) -> str:
    return (f"port {port} on {host} is in use (another rlx ui or MLflow server?); "
            "pass --port N or stop the other server")


def _answers(host: str, port: int) -> bool:
    import urllib.error
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # http_proxy must not see 127.0.0.1
    try:
        with direct.open(f"http://{_netloc(host, port)}/health", timeout=1):
            return True
    except urllib.error.HTTPError:  # any HTTP answer means it serves
        return True
    except OSError:
        return False


def _netloc(host: str, port: int) -> str:
    """Where a browser on this machine reaches the server: a wildcard interface is not an address."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _runs_url(uri: str, host: str, port: int, experiment: str | None = None) -> str:
    """The runs table in the model-training view (MLflow 3 opens on its GenAI pages
    otherwise) of ``experiment``, or by default of the experiment of the newest run; the
    root when there is none or the store cannot be read cheaply."""
    root = f"http://{_netloc(host, port)}/"
    from rlx.home import sqlite_path

    db = sqlite_path(uri)
    if db is None:
        return root
    db = db.expanduser()
    if not db.is_file():
        return root
    import sqlite3
    from contextlib import closing

    try:
        # read-only: the server may be creating its tables at this moment
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1)) as con:
            if experiment is not None:
                row = con.execute("SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
                                  (experiment,)).fetchone()
            else:
                row = con.execute(
                    "SELECT e.experiment_id FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                    "WHERE e.lifecycle_stage = 'active' AND r.lifecycle_stage = 'active' "
                    "ORDER BY r.start_time DESC LIMIT 1").fetchone()
    except sqlite3.Error:  # no runs table yet, or not MLflow's
        return root
    from rlx.mlflow_views import runs_table_url

    return runs_table_url(root, str(row[0])) if row else root


def ui_root(uri: str, port: int = 5000) -> tuple[str, bool]:
    """Where the MLflow UI of store ``uri`` is: the tracking server itself for an http(s)
    store (True: it serves already), else where ``rlx ui`` serves it by default (False)."""
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/") + "/", True
    return f"http://{_netloc('127.0.0.1', port)}/", False


def _stop_group(proc: subprocess.Popen, grace: float = GRACE_S) -> None:
    """SIGTERM the server's group, then SIGKILL whatever is still there after ``grace``."""
    pgid = proc.pid  # start_new_session: the group is the child's pid
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap it, or it counts as a member
        if not _group_alive(pgid):
            break
        time.sleep(0.1)
    else:
        _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Whether the group has a member that is not a zombie. Zombies wait for their parent
    or init to reap them; they serve nothing, and waiting for them would cost the grace."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pids = None
    if pids is None:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _say(line: str, err: bool = True) -> None:
    """A line that must not fail: after SIGHUP the terminal may be gone, and the server
    must still be stopped."""
    try:
        typer.echo(line, err=err)
    except OSError:
        pass


class _ErrorEcho:
    """Follows the server log and echoes its error lines (and a traceback's last line) to
    stderr. Until ``release()`` it only collects them: if the server fails to start, the
    user gets one line, not MLflow's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[str] = []
        self._shown: list[str] = []  # as echoed: a traceback's last line says where the rest is
        self._echo = False
        self._lock = threading.Lock()  # release() and the follower must not both miss a line
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="rlx-ui-log", daemon=True)
        self._thread.start()

    def release(self) -> None:
        with self._lock:
            for line in self._shown:
                _say(line)
            self._echo = True

    def stop(self) -> None:
        """Collect the last lines without echoing them: rlx ui's own last line sums them up."""
        with self._lock:
            self._echo = False
        self._done.set()
        self._thread.join(timeout=2)

    def _follow(self) -> None:
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        with f:
            partial, in_traceback = b"", False
            while True:
                done = self._done.is_set()  # read once more after stop() for the last lines
                chunk = f.read()
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for raw in lines:
                    line = raw.decode(errors="replace")
                    if line.startswith("Traceback (most recent call last)"):
                        in_traceback = True
                    elif in_traceback and line and not line[0].isspace() and not line.startswith(
                            ("During handling", "The above exception")):
                        in_traceback = False
                        self._error(line, f"{line}  (traceback in {self.path})")
                    elif not in_traceback and _ERROR.search(line):
                        self._error(line, line)
                if done:
                    return
                self._done.wait(0.3)

    def _error(self, line: str, shown: str) -> None:
        with self._lock:
            self.errors.append(line)
            self._shown.append(shown)
            if self._echo:
                _say(shown)
