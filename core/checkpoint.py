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
MANIFEST = "manifest.json"


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
        # every file's size: a checkpoint cut short later (a full disk, an interrupted copy)
        # is then found, by file, before anything is loaded from it
        sizes = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()}
        (tmp / MANIFEST).write_text(json.dumps(sizes))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(folder)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator: Any, path: Path) -> dict[str, Any]:
    """Load one checkpoint; an ``RlxError`` naming the file when it is unreadable."""
    from rlx.errors import RlxError

    _check_sizes(path)
    state_file = path / "loop_state.json"
    try:
        state = json.loads(state_file.read_text())
        if not isinstance(state, dict) or "step" not in state:
            raise ValueError("no step recorded")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise RlxError(f"checkpoint file '{state_file}' is unreadable ({_why(exc)})") from None
    try:
        accelerator.load_state(str(path))
    except Exception as exc:  # a truncated or corrupt tensor file: safetensors and torch say different things
        raise RlxError(f"checkpoint '{path}' is unreadable ({_why(exc)})") from None
    return state


def _check_sizes(path: Path) -> None:
    """Each file the manifest lists is there at its written size (older checkpoints have
    no manifest: nothing to check)."""
    from rlx.errors import RlxError

    try:
        sizes = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise RlxError(f"checkpoint file '{path / MANIFEST}' is unreadable ({_why(exc)})") from None
    for name, size in sizes.items():
        f = path / name
        have = f.stat().st_size if f.is_file() else None
        if have != size:
            what = "is missing" if have is None else f"has {have} bytes, {size} were written"
            raise RlxError(f"checkpoint file '{f}' {what}")


def load_newest(accelerator: Any, folder: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """The newest checkpoint in ``folder`` that loads, falling back to older ones (a disk
    that filled or a copy cut short can leave the newest one damaged). Returns its path,
    its loop state and one line per checkpoint that had to be skipped."""
    from rlx.errors import RlxError

    skipped: list[str] = []
    for path in reversed(checkpoints(folder)):
        try:
            return path, load(accelerator, path), skipped
        except RlxError as exc:
            skipped.append(str(exc))
    if skipped:
        raise RlxError(f"no readable checkpoint in '{folder}': {'; '.join(skipped)}; start the run again")
    raise RlxError(f"no checkpoint in '{folder}'; start the run again")


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
