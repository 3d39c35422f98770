"""benchmarks/dpo_vs_trl.py starts, runs one tiny step of each library on the same pairs
and reports (figures come from the full runs in benchmarks/README.md, not from this test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "dpo_vs_trl.py"

# settings rows whose rlx and TRL columns must read the same (each column from its library's live objects)
SAME = {
    "pairs per optimizer step": r"4", "loss": r"sigmoid", "beta": r"0\.1", "f-divergence": r"reverse_kl",
    "label smoothing": r"0\.0", r"NLL term on chosen \(RPO\)": r"0\.0",
    "reference model": r"separate: True, float32", "reference log-probs": r"every step, no grad",
    "lr": r"0\.0001", "betas / eps": r"\(0\.9, 0\.999\) / 1e-08", "weight decay": r"0\.0",
    "max grad norm": r"1\.0", "lr schedule": r"constant, warm-up 0", "seed": r"0",
}
# rows computed from the batches each library fed its model: any value, but the same in both
SAME_SEEN = ("prompt tokens \\(min / max\\)", "completion tokens with EOS \\(min / max\\)",
             "sequence tokens \\(min / max\\)", "real tokens per step \\(mean\\)")


def row(name: str, rlx: str, trl: str) -> str:
    return rf"(?m)^  {name}\s{{2,}}{rlx}\s{{2,}}{trl}$"


@pytest.mark.parametrize("mode", ["matched", "at-defaults"])
def test_dpo_vs_trl_smoke(tmp_path, mode):
    pytest.importorskip("trl")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--steps", "1", "--warmup", "0",
                           "--rounds", "1", "--pairs", "4", *(["--at-defaults"] if mode == "at-defaults" else [])],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "round 0 rlx:" in out and "round 0 trl:" in out
    assert "settings (read back from each library's live objects):" in out
    for name, value in SAME.items():
        assert re.search(row(name, value, value), out), name
    for name in SAME_SEEN:
        assert re.search(row(name, r"([\d./ ]+?)", r"\1"), out), name
    assert "pairs: the same in both, in the same order (1 steps x 4 pairs" in out
    # policy = reference at the first step: both losses are ln 2
    assert re.search(r"loss per step: rlx 0\.6931; trl 0\.6931;", out)
    if mode == "matched":  # both fp32, no recomputation, the same single-tensor AdamW, no truncation
        assert re.search(row("mixed precision", r"fp32 \(asked for\)", "bf16 False, fp16 False"), out)
        assert re.search(row("AdamW kernel", r"single-tensor \(foreach=False\)", r"single-tensor \(foreach=None\)"), out)
        assert re.search(row("gradient checkpointing", r"no \(not supported\)", "False"), out)
        assert re.search(row("truncation", r"none \(rlx does not truncate\)", r"none \(max_length None\)"), out)
    else:  # each its own: rlx's auto (fp32, or bf16 on a CPU with AMX); TRL's DPOConfig defaults
        assert re.search(row("mixed precision", r"(?:fp32|bf16) \(auto: [^\n]+\)", "bf16 True, fp16 False"), out)
        assert re.search(row("gradient checkpointing", r"no \(not supported\)", "True"), out)
        assert re.search(row("AdamW kernel", "fused", "fused"), out)
        assert re.search(row("truncation", r"none \(rlx does not truncate\)", "max_length 1024, keep_start"), out)
    # rlx's policy packs the pairs (each prompt once) when that saves a fifth of the slots; TRL pads
    packed = re.search(row("padding", r"packed \(policy\.packing\): (\d+) x (\d+) slots for (\d+) real tokens", "padded rows"), out)
    if packed:
        rows, width, real = map(int, packed.groups())
        assert real <= rows * width and re.search(row("prompt pass", r"once per pair \(shared\)", r"once per row[^\n]*"), out)
    else:
        assert re.search(row("padding", "padded rows", "padded rows"), out)
    summary = re.search(r"tiny: ratio rlx/trl s/step (\d+\.\d\d) \(target <= 0\.50; per round ([\d., ]+), "
                        r"their median (\d+\.\d\d)\)", out)
    assert summary, out[-1500:]
    pooled, rounds, paired = summary.groups()
    # one round: the pooled ratio, the round's and their median are one figure
    assert pooled == paired == rounds.strip(), summary.group(0)


def test_dpo_vs_trl_bad_input():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--steps", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("--steps, --rounds and --pairs must be >= 1")
    assert "Traceback" not in proc.stderr
