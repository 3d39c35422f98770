#!/usr/bin/env bash
# Process-reward hacking (Gao et al. 2024) in two steps, from any RLX_HOME:
#
#   1. train a process reward model on the step checker's labels
#      (rlx sweep prm_hacking_prm.toml: one prm-train run)
#   2. GRPO on it with refinement none / clip / delta, and on the checker itself
#      (rlx sweep prm_hacking.toml)
#
#   examples/sweeps/prm_hacking.sh                      # both steps
#   PRM_DIR=<folder> examples/sweeps/prm_hacking.sh     # step 2 only, on a PRM you have
#   examples/sweeps/prm_hacking.sh --seeds 0-4          # flags for step 2's rlx sweep
#
# The PRM lands in $RLX_HOME/runs/<run id>/policy; step 2 gets it as an absolute path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python}"

if [[ -z "${PRM_DIR:-}" ]]; then
    echo "== step 1: a learned PRM (rlx sweep $here/prm_hacking_prm.toml)" >&2
    out="$(rlx sweep "$here/prm_hacking_prm.toml" --no-live --json)" || true  # checked below
    id="$(printf '%s' "$out" | "$py" -c '
import json, sys
d = json.load(sys.stdin)
sid, status = d["sweep_id"], d["status"]
if status != "FINISHED" or any(r["status"] != "FINISHED" for r in d["runs"]):
    sys.exit(f"PRM sweep {sid} is {status}: see rlx sweep show {sid}; "
             f"continue it with rlx sweep resume {sid} --retry-failed, then pass PRM_DIR")
print(d["runs"][0]["run_id"])')"
    PRM_DIR="$(rlx runs show "$id" --json | "$py" -c 'import json, sys; print(json.load(sys.stdin)["policy_dir"])')"
fi
echo "== PRM: $PRM_DIR" >&2
echo "== step 2: GRPO on it (rlx sweep $here/prm_hacking.toml)" >&2
exec rlx sweep "$here/prm_hacking.toml" --max-parallel 2 --no-live "$@" -- --set "reward.prm.model=$PRM_DIR"
