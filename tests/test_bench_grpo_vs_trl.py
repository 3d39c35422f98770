"""benchmarks/grpo_vs_trl.py starts, runs one tiny step of each library and reports
(figures come from the full runs in benchmarks/README.md, not from this test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", ["matched", "at-defaults"])
def test_grpo_vs_trl_smoke(tmp_path, mode):
    pytest.importorskip("trl")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grpo_vs_trl.py"), "--size", "tiny",
                           "--steps", "1", "--warmup", "0", "--rounds", "1", "--prompts", "1", "--generations", "2",
                           "--tokens", "4", *(["--at-defaults"] if mode == "at-defaults" else [])],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "round 0 rlx:" in out and "round 0 trl:" in out
    # both configurations, side by side, and the settings that must match do
    assert "settings (read back" in out
    for pattern in (r"completions per optimizer step\s+2\s+2\n", r"new tokens \(min / max\)\s+4 / 4\s+4 / 4\n",
                    r"loss_type\s+grpo\s+grpo\n", r"lr\s+0.0001\s+0.0001\n",
                    r"betas / eps\s+\(0.9, 0.999\) / 1e-08\s+\(0.9, 0.999\) / 1e-08\n"):
        assert re.search(pattern, out), pattern
    assert "prompts: the same in both" in out
    if mode == "matched":  # both fp32, the same AdamW kernel
        assert re.search(r"mixed precision\s+fp32 \(asked for\)\s+bf16 False, fp16 False\n", out)
        assert re.search(r"AdamW kernel\s+single-tensor \(foreach=False\)\s+single-tensor", out)
    else:  # each its own: rlx's auto (fp32, or bf16 on a CPU with AMX); TRL's bf16
        assert re.search(r"mixed precision\s+(?:fp32|bf16) \(auto: [^\n]+\)\s+bf16 True", out)
        assert re.search(r"gradient checkpointing\s+no \(not supported\)\s+True\n", out)
    assert "rlx completion lengths seen: min 4, max 4" in out
    assert "trl completion lengths seen: min 4, max 4" in out
    summary = re.search(r"tiny: ratio rlx/trl s/step (\d+\.\d+) \(target <= [\d.]+; best rounds (\d+\.\d\d); "
                        r"per round ([\d., ]+), their median (\d+\.\d\d)\)", out)
    assert summary, out[-1500:]
    pooled, best, rounds, paired = summary.groups()
    # one round: the pooled ratio (to its extra digit), the best round's, the round's and their median are one figure
    assert best == rounds.strip() == paired and abs(float(pooled) - float(paired)) <= 0.0051, summary.group(0)
