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
        **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlx.cli.main", *args], capture_output=True, text=True,
                          env=cli_env(home, paths, **extra_env), cwd=cwd or home, timeout=timeout)


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
