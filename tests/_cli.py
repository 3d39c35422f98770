"""Running the real ``rlx`` CLI in a subprocess against a private RLX_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterable

CLEAN = ("RLX_DISABLE_PLUGINS", "MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_DEBUG")


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
    env = cli_env(home, paths, **extra_env)
    cwd = cwd or home
    if not fresh:
        done = _ZYGOTE.run(list(args), env, cwd, timeout)
        if done is not None:
            return done
    return subprocess.run([sys.executable, "-m", "rlx.cli.main", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


class _Zygote:
    """The test process's end of ``_zygote.py``: started on first use, one command at a time."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.env = {k: v for k, v in os.environ.items() if k not in CLEAN and k != "PYTHONPATH"}
        self.usable = os.environ.get("RLX_TEST_ZYGOTE", "1") != "0" and hasattr(os, "fork")

    def _start(self) -> bool:
        import json

        from _store_template import ENV, template

        built = template()
        env = {**self.env, ENV: str(built) if built else "0"}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_zygote.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     bufsize=0)  # unbuffered: select() below must see every line
        first = self.proc.stdout.readline()
        if not first or "ready" not in json.loads(first):
            self.usable = False
            self.proc.kill()
            return False
        return True

    def run(self, argv: list[str], env: dict[str, str], cwd: Path, timeout: float
            ) -> subprocess.CompletedProcess | None:
        import json
        import select
        import signal
        import tempfile

        # what Python reads only at start-up must be what the zygote started with
        startup = {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH"}
        if not self.usable or startup != {k: v for k, v in self.env.items() if k.startswith("PYTHON")}:
            return None
        with self.lock, tempfile.TemporaryDirectory(prefix="rlx-cmd-") as tmp:
            if (self.proc is None or self.proc.poll() is not None) and not self._start():
                return None
            out, err = Path(tmp, "out"), Path(tmp, "err")
            self.proc.stdin.write((json.dumps({"argv": argv, "env": env, "cwd": str(cwd), "out": str(out),
                                               "err": str(err)}) + "\n").encode())
            pid = json.loads(self.proc.stdout.readline())["pid"]
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                json.loads(self.proc.stdout.readline())
                raise subprocess.TimeoutExpired(["rlx", *argv], timeout, out.read_text(), err.read_text())
            code = json.loads(self.proc.stdout.readline())["code"]
            return subprocess.CompletedProcess(["rlx", *argv], code, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

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
