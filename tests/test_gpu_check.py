"""benchmarks/gpu_check.sh --smoke: the GPU check's four sections at toy sizes on CPU, each
printing finite figures and its wall time (the figures themselves come from a GPU run)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

# what each section's FIGURES line must carry
EXPECTED = {
    "grpo": ("rlx_s_per_step", "trl_s_per_step", "rlx_over_trl", "rlx_gen_s"),
    "sampler": ("rlx_tokens_per_s", "generate_tokens_per_s", "rlx_speedup"),
    "mfu": ("policy_pass_s", "tflops", "mfu", "peak_tflops", "grpo_train_s", "grpo_train_tflops", "grpo_train_mfu"),
    "pytest_gpu": ("passed", "failed", "errors", "skipped"),
}


def parse_figures(out: str) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        if line.startswith("FIGURES "):
            _, section, *pairs = line.split()
            found[section] = {k: float(v) for k, v in (p.split("=", 1) for p in pairs)}
    return found


def test_smoke_run_prints_every_sections_figures(tmp_path):
    pytest.importorskip("trl")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RLX_PEAK_TFLOPS")}
    # this interpreter's environment, not a .venv the script would otherwise make
    env["VIRTUAL_ENV"] = sys.prefix
    proc = subprocess.run(["bash", str(SCRIPT), "--smoke", "--peak-tflops", "0.5"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-4000:]
    figures = parse_figures(out)
    for section, keys in EXPECTED.items():
        assert section in figures, f"no FIGURES line for {section}"
        for key in keys:
            assert math.isfinite(figures[section][key]), (section, key, figures[section])
    grpo, sampler, mfu, tests = (figures[s] for s in EXPECTED)
    assert grpo["rlx_s_per_step"] > 0 and grpo["trl_s_per_step"] > 0 and 0 < grpo["rlx_gen_s"] < grpo["rlx_s_per_step"]
    assert sampler["rlx_tokens_per_s"] > 0 and sampler["generate_tokens_per_s"] > 0
    assert mfu["peak_tflops"] == 0.5 and mfu["tflops"] > 0
    assert mfu["mfu"] == pytest.approx(mfu["tflops"] / 0.5, rel=1e-3)
    # no CUDA here: every GPU test skips, none fails
    assert tests["failed"] == 0 and tests["errors"] == 0 and tests["passed"] + tests["skipped"] >= 1
    for n in range(1, 5):  # a wall time per section
        assert re.search(rf"^\[{n}/4\] [^\n]*: \d+\.\d s$", out, re.M), n
    assert re.search(r"^\[total\] \d+ s", out, re.M)
