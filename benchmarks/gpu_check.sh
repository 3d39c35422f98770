#!/usr/bin/env bash
# rlx on one NVIDIA GPU, in one go (sized for under 8 minutes on an H200, installs included; 184 s there on 2026-12-04):
#   1. GRPO step time, rlx vs TRL, on a Qwen2.5-0.5B-shaped model (64 x 128-token completions, bf16)
#   2. rlx's decode loop vs transformers' model.generate, tokens/s
#   3. model-FLOPs utilization of the policy's forward + backward
#   4. pytest -m gpu (the suite's CUDA tests)
# Runs in the active virtual environment ($VIRTUAL_ENV) if there is one, else in .venv, which it sets
# up as README.md does when it is missing (from PyPI, where torch==2.13.0 is the CUDA build).
# Without a CUDA device, or with --smoke, it runs the same sections at toy sizes on CPU (40-90 s on 2 cores).
#
#   bash benchmarks/gpu_check.sh                      # on the GPU machine
#   bash benchmarks/gpu_check.sh --smoke              # CPU, toy sizes (what tests/test_gpu_check.py runs)
#   bash benchmarks/gpu_check.sh --peak-tflops 989    # a GPU the peak table lacks (or RLX_PEAK_TFLOPS=989)
# Other flags go to benchmarks/gpu_check.py (--help lists them).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
START=$(date +%s)

die() {
    echo "gpu_check: $*" >&2
    exit 1
}

elapsed() {
    echo "$(( $(date +%s) - $1 )) s"
}

make_venv() {
    # as README.md's setup, with the dev (pytest) and bench (trl) extras the sections need
    local t
    t=$(date +%s)
    command -v python3 >/dev/null || die "python3 is missing: install Python 3.10+ first"
    echo "[setup] no .venv: creating it (torch==2.13.0 and rlx[dev,bench] from PyPI)"
    python3 -m venv .venv || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    # a half-made venv would pass for a ready one on the next run: remove it if the installs fail
    if ! (. .venv/bin/activate && pip install -q torch==2.13.0 && pip install -q -c constraints.txt -e '.[dev,bench]'); then
        rm -rf .venv
        die "pip could not install the venv (is PyPI reachable?); run README.md's setup by hand, then rerun"
    fi
    echo "[setup] .venv ready: $(elapsed "$t")"
}

check_venv() {
    local missing
    missing=$(python - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "transformers", "trl", "pytest", "rlx") if importlib.util.find_spec(m) is None))
EOF
)
    [ -z "$missing" ] || die "$(command -v python) lacks $missing: pip install -c constraints.txt -e '.[dev,bench]'"
}

has_cuda() {
    python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'
}

smoke=0
for arg in "$@"; do
    [ "$arg" = "--smoke" ] && smoke=1
done

if [ -n "${VIRTUAL_ENV:-}" ]; then
    [ -x "$VIRTUAL_ENV/bin/python" ] || die "VIRTUAL_ENV=$VIRTUAL_ENV has no bin/python"
    export PATH="$VIRTUAL_ENV/bin:$PATH"
else
    [ -d .venv ] || make_venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
check_venv

if [ "$smoke" = 0 ] && ! has_cuda; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        torch_version=$(python -c 'import torch; print(torch.__version__)')
        die "nvidia-smi sees a GPU but torch $torch_version has no CUDA: pip install --force-reinstall torch==2.13.0 (PyPI's CUDA build), or pass --smoke"
    fi
    echo "gpu_check: no CUDA device visible to torch: running the CPU smoke check (--smoke)"
    set -- --smoke "$@"
fi

export TOKENIZERS_PARALLELISM=false
status=0
python benchmarks/gpu_check.py "$@" || status=$?
echo "[total] $(elapsed "$START") (setup included)"
exit "$status"
