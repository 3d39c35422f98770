"""Rewrite constraints.txt from the packages installed in this environment (run it in a
venv where the test suite just passed, e.g. after a green .ci/newest)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
lock = root / "constraints.txt"
header = [line for line in lock.read_text().splitlines() if line.startswith("#")] if lock.exists() else []
frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                        text=True, check=True).stdout.splitlines()
# the local version label (+cpu) would not match other builds of the same release
pins = sorted((re.sub(r"\+[\w.]+$", "", p) for p in frozen if "==" in p and not p.lower().startswith("rlx==")),
              key=str.lower)
lock.write_text("\n".join([*header, *pins]) + "\n")
print(f"wrote {len(pins)} pins to {lock}")
