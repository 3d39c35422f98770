"""Each benchmark script starts and finishes with tiny settings (figures come from the
full runs documented in benchmarks/README.md, not from tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_grpo_step_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grpo_step.py"), "--steps", "2",
                           "--prompts", "2", "--generations", "2", "--tokens", "8"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "s/step" in proc.stdout and "tokens/s" in proc.stdout and "peak RSS" in proc.stdout
    assert "4 completions x 8 tokens" in proc.stdout


def test_multiprocess_step_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "multiprocess_step.py"), "--steps", "2",
                           "--rounds", "1", "--global-prompts", "2"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "ratio (2 / 1)" in proc.stdout


def test_ppo_vs_sb3_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ppo_vs_sb3.py"), "--steps", "2048",
                           "--rounds", "1"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "round 0 sb3:" in proc.stdout and "round 0 rlx:" in proc.stdout and "ratio rlx/sb3" in proc.stdout


def test_dqn_vs_sb3_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dqn_vs_sb3.py"), "--steps", "1536",
                           "--rounds", "1"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "round 0 sb3:" in out and "round 0 rlx:" in out and "ratio rlx/sb3" in out
    # the Zoo's settings, read back from both libraries' live objects
    assert re.search(r"batch / buffer / starts\s+64 / 100000 / 1000\s+64 / 100000 / 1000\n", out)
    assert re.search(r"envs x steps, gradient steps\s+1 x 256, 128\s+1 x 256, 128\n", out)
    assert re.search(r"network\s+\[256, 256\] relu\s+\[256, 256\] relu\n", out)


def test_sweep_throughput_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep_throughput.py"), "--runs", "1",
                           "--steps", "1", "--case", "control"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "ratio parallel 2 / parallel 1" in proc.stdout and "launch to first step" in proc.stdout
