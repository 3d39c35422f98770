"""``pip install .`` (a real wheel, not the editable install) ships every plugin, its docs
page and the tiny checkpoint, and registers the built-ins as entry points."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_wheel_install_is_complete(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__",
                                                             "examples", "tests", ".pytest_cache"))
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(src)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    code = ("import json, rlx, rlx.plugins.tiny.policy as t; from rlx.registry import Registry;"
            "print(json.dumps({'file': rlx.__file__, 'ckpt': (t.CHECKPOINT / 'model.safetensors').is_file(),"
            "'rows': Registry().rows()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["file"].startswith(str(target)) and info["ckpt"]
    ok = {r["name"] for r in info["rows"] if r["status"] == "ok"}
    assert {"grpo", "sft", "prm", "verifier", "arithmetic", "hf", "tiny"} <= ok
    for fam in ("grpo", "sft", "prm", "verifier", "arithmetic", "hf", "tiny"):
        assert (target / "rlx" / "plugins" / fam / "README.md").is_file(), fam
