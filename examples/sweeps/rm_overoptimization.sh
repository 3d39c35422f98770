#!/usr/bin/env bash
# Reward-model over-optimization (Coste et al. 2024) in two steps, from any RLX_HOME:
#
#   1. train three reward models (rlx sweep rm_overoptimization_rms.toml: rm runs, seeds 0-2)
#   2. GRPO on the seed-0 model alone and on the three as an ensemble (min, uwo), with
#      the gold verifier logged beside (rlx sweep rm_overoptimization.toml)
#
#   examples/sweeps/rm_overoptimization.sh                    # both steps
#   RM_DIRS=d0,d1,d2 examples/sweeps/rm_overoptimization.sh   # step 2 only, on models you have
#   examples/sweeps/rm_overoptimization.sh --seeds 0-4        # flags for step 2's rlx sweep
#
# The reward models land in $RLX_HOME/runs/<run id>/policy; step 2 gets them as absolute
# paths, so the runs find them whatever their working directory.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python}"

if [[ -z "${RM_DIRS:-}" ]]; then
    echo "== step 1: three reward models (rlx sweep $here/rm_overoptimization_rms.toml)" >&2
    out="$(rlx sweep "$here/rm_overoptimization_rms.toml" --max-parallel 2 --no-live --json)" || true  # checked below
    ids="$(printf '%s' "$out" | "$py" -c '
import json, sys
d = json.load(sys.stdin)
runs = sorted(d["runs"], key=lambda r: r["seed"])
bad = [r for r in runs if r["status"] != "FINISHED"]
sid, status = d["sweep_id"], d["status"]
if status != "FINISHED" or bad:
    sys.exit(f"reward-model sweep {sid} is {status}: see rlx sweep show {sid}; "
             f"continue it with rlx sweep resume {sid} --retry-failed, then pass RM_DIRS")
print(" ".join(r["run_id"] for r in runs))')"
    dirs=()
    for id in $ids; do
        dirs+=("$(rlx runs show "$id" --json | "$py" -c 'import json, sys; print(json.load(sys.stdin)["policy_dir"])')")
    done
    RM_DIRS="$(IFS=,; echo "${dirs[*]}")"
fi
IFS=, read -r -a rms <<< "$RM_DIRS"
if (( ${#rms[@]} < 2 )); then
    echo "RM_DIRS needs two or more reward-model folders, comma-separated; got '$RM_DIRS'" >&2
    exit 2
fi
echo "== reward models: $RM_DIRS (the single-rm cell uses the first)" >&2
echo "== step 2: GRPO on them (rlx sweep $here/rm_overoptimization.toml)" >&2
exec rlx sweep "$here/rm_overoptimization.toml" --max-parallel 2 --no-live "$@" -- \
    --set "reward.orm.model=${rms[0]}" --set "reward.ensemble.models=$RM_DIRS"
