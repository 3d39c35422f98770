"""Resumable checkpoints: accelerate's ``save_state`` (model, optimizer, scheduler, every
RNG) plus the loop's own state (step, environment stream, objective state, samples).

A checkpoint is written to a temporary folder and renamed into place, so a kill during
the write never leaves a half checkpoint that resume would pick up.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

PREFIX = "step_"


def checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / "loop_state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest(folder: Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


def save(accelerator: Any, folder: Path, step: int, loop_state: dict[str, Any], keep: int) -> Path:
    """Every rank must call this (accelerate writes per-rank RNG states)."""
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".tmp_{PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # tied embeddings (lm_head = embed_tokens) are stored once and re-tied on load; accelerate
    # warns about that at every save, which would bury the run's own output
    quiet = logging.getLogger("accelerate.utils.other")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        accelerator.save_state(str(tmp), safe_serialization=True)
    finally:
        quiet.setLevel(level)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "loop_state.json").write_text(json.dumps({"step": step, **loop_state}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator: Any, path: Path) -> dict[str, Any]:
    accelerator.load_state(str(path))
    return json.loads((path / "loop_state.json").read_text())
