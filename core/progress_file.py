"""A run's heartbeat for whoever supervises it (``rlx sweep``'s live table): the step it
reached, its step count and its headline metrics, in ``<run dir>/progress.json``.

A file rather than a query of the catalog or MLflow: it costs the loop one small write a
second, and the supervisor reads it without touching either store."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

NAME = "progress.json"
EVERY_S = 1.0


class Heartbeat:
    """Writes ``progress.json`` at most every ``EVERY_S`` seconds (and always when forced)."""

    def __init__(self, run_dir: Path, steps: int, headline: list[str]):
        self.path, self.steps, self.headline = run_dir / NAME, steps, headline
        self._last = 0.0
        self._first_step_at: float | None = None

    def beat(self, step: int, metrics: dict[str, float], force: bool = False, trained: bool = True) -> None:
        """``trained``: ``step`` was just trained (not only evaluated); the first such beat
        is always written, with its time as ``first_step_at`` (a launcher's start-up cost)."""
        now = time.time()
        if trained and self._first_step_at is None:
            self._first_step_at, force = now, True
        if not force and now - self._last < EVERY_S:
            return
        self._last = now
        shown = {k: float(metrics[k]) for k in self.headline if k in metrics}
        data = {"step": step, "steps": self.steps, "metrics": shown, "time": now,
                "first_step_at": self._first_step_at}
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)  # a reader never sees half a file
        except OSError:  # a full disk must not stop training for the sake of a progress line
            pass


def read(run_dir: Path) -> dict[str, Any] | None:
    """The newest heartbeat of the run in ``run_dir``; None before its first."""
    try:
        data = json.loads((run_dir / NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
