"""Running the real ``rlx`` CLI in a subprocess against a private RLX_HOME."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterable

CLEAN = ("RLX_DISABLE_PLUGINS", "MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_DEBUG")
# PYTHON* variables Python reads when used, not at start-up: a zygote child reads its own.
# (ray.init sets PYTHONBREAKPOINT in its process for good: counting it sent every command
# after the Ray tests to a fresh interpreter, 5-7x slower, unnoticed until fallbacks were counted)
READ_WHEN_USED = ("PYTHONPATH", "PYTHONBREAKPOINT")


def _startup(env: dict[str, str]) -> dict[str, str]:
    """The variables of ``env`` that only a new interpreter would take into account."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k not in READ_WHEN_USED}


def cli_env(home: Path, paths: Iterable[Path] = (), **extra_env: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env["RLX_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra_env)
    return env


def rlx(*args: str, home: Path, paths: Iterable[Path] = (), timeout: int = 600, cwd: Path | None = None,
        fresh: bool = False, **extra_env: str) -> subprocess.CompletedProcess:
    """``python -m rlx.cli.main ARGS`` in its own process, forked from the suite's zygote
    (``_zygote.py``: the same process without re-importing torch and MLflow) unless
    ``fresh``: a new interpreter, for tests of what a command prints as a whole."""
    proc = start(*args, home=home, paths=paths, cwd=cwd, fresh=fresh, **extra_env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(["rlx", *args], timeout, out, err) from None
    return subprocess.CompletedProcess(["rlx", *args], proc.returncode, out, err)


def start(*args: str, home: Path, paths: Iterable[Path] = (), cwd: Path | None = None, fresh: bool = False,
          session: bool = False, **extra_env: str) -> "subprocess.Popen | Command":
    """``rlx ARGS`` started, not waited for (see ``rlx``): a ``Popen`` or a ``Command``, which
    answers the same calls. ``session``: in a session and process group of its own, as a
    terminal or a scheduler starts ``rlx run`` (signal it with ``os.killpg(proc.pid, ...)``)."""
    env = cli_env(home, paths, **extra_env)
    cwd = cwd or home
    if not fresh:
        command = _ZYGOTE.start(list(args), env, cwd, session)
        if command is not None:
            return command
    return subprocess.Popen([sys.executable, "-m", "rlx.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=session)


class Command:
    """An ``rlx`` command forked by the zygote, with the part of ``Popen``'s interface the
    tests use. Its output goes to files, read once it has ended."""

    def __init__(self, pid: int, replies: queue.Queue[int | None], folder: tempfile.TemporaryDirectory):
        self.pid = pid
        self.returncode: int | None = None
        self._replies = replies
        self._folder = folder

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self._set(self._replies.get_nowait())
            except queue.Empty:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self._set(self._replies.get(timeout=timeout))
            except queue.Empty:
                raise subprocess.TimeoutExpired(f"rlx (pid {self.pid})", timeout) from None
        return self.returncode

    def _set(self, code: int | None) -> None:
        if code is None:
            raise RuntimeError("the test zygote ended while a command was running; see its stderr above")
        self.returncode = code

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        folder = Path(self._folder.name)
        out, err = ((folder / n).read_text(errors="replace") for n in ("out", "err"))
        self._folder.cleanup()
        return out, err

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # ended; its code is on the way
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Zygote:
    """The test process's end of ``_zygote.py``: started on first use; a thread hands each
    of its replies to the command it is about."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.env = {k: v for k, v in os.environ.items() if k not in CLEAN and k != "PYTHONPATH"}
        self.usable = os.environ.get("RLX_TEST_ZYGOTE", "1") != "0" and hasattr(os, "fork")
        self.waiting: dict[int, queue.Queue[int | None]] = {}
        self.ids = 0

    def _start(self) -> bool:
        import json

        from _store_template import ENV, template

        built = template()
        env = {**self.env, ENV: str(built) if built else "0"}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_zygote.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        first = self.proc.stdout.readline()
        if not first or "ready" not in json.loads(first):
            self.usable = False
            self.proc.kill()
            return False
        threading.Thread(target=self._read, args=(self.proc,), name="zygote-replies", daemon=True).start()
        return True

    def _read(self, proc: subprocess.Popen) -> None:
        import json

        for line in proc.stdout:
            msg = json.loads(line)
            if "pid" in msg:
                self.waiting[msg["id"]].put(msg["pid"])
            else:
                with self.lock:
                    self.waiting.pop(msg["id"]).put(msg["code"])
        with self.lock:  # the zygote ended: no command of it will answer
            for replies in self.waiting.values():
                replies.put(None)

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, session: bool) -> Command | None:
        import json

        # what Python reads only at start-up must be what the zygote started with
        theirs, ours = _startup(env), _startup(self.env)
        if not self.usable or theirs != ours:
            if self.usable:  # a command several times slower than it need be: say why
                import warnings

                differ = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
                warnings.warn(f"rlx {' '.join(argv[:2])} ran in a fresh interpreter, not the test zygote: "
                              f"{', '.join(differ)} differ from the zygote's", stacklevel=4)
            return None
        folder = tempfile.TemporaryDirectory(prefix="rlx-cmd-")
        with self.lock:
            if (self.proc is None or self.proc.poll() is not None) and not self._start():
                folder.cleanup()
                return None
            self.ids += 1
            replies: queue.Queue[int | None] = queue.Queue()
            self.waiting[self.ids] = replies
            self.proc.stdin.write((json.dumps({"id": self.ids, "argv": argv, "env": env, "cwd": str(cwd),
                                               "out": str(Path(folder.name, "out")),
                                               "err": str(Path(folder.name, "err")),
                                               "session": session}) + "\n").encode())
            self.proc.stdin.flush()
        pid = replies.get()
        if pid is None:
            raise RuntimeError("the test zygote ended before it started a command; see its stderr above")
        return Command(pid, replies, folder)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_ZYGOTE = _Zygote()


def close_zygote() -> None:
    _ZYGOTE.close()


def make_plugin(root: Path, name: str, source: str, version: str = "0.0.1") -> Path:
    """A hand-made installed distribution (module + .dist-info with an ``rlx`` entry
    point) under ``root``: put ``root`` on PYTHONPATH and rlx discovers it."""
    root.mkdir(parents=True, exist_ok=True)
    module = f"{name}_rlx_plugin"
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[rlx]\n{name} = {module}\n")
    return root


def latest_run(home: Path) -> tuple[dict, "object"]:
    """The newest run in ``home``'s catalog and an MLflow client on its store."""
    import json

    from mlflow.tracking import MlflowClient

    run = json.loads(rlx("runs", "list", "--json", home=home).stdout)[0]
    return run, MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")


def metric_history(client: "object", run_id: str, key: str) -> list:
    """A metric's history, ordered by step."""
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def install_copy(src: Path, tmp: Path) -> Path:
    """``src`` (a package folder) installed into ``tmp/site`` with ``pip install --target``,
    built from a copy so no build/ or *.egg-info lands in the repository. Put the returned
    folder on PYTHONPATH and rlx finds the package's entry points."""
    import shutil

    copy = tmp / "src"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist"))
    target = tmp / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(copy)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target
