"""The launcher interface: where ``rlx sweep`` runs each of its runs.

A sweep's controller (``rlx.sweep``) decides what runs, with which config and seed, and
records it; a launcher only starts processes somewhere and says when they end. Every run
is an ordinary ``rlx`` command (``rlx run --config FILE`` or ``rlx runs resume ID``), so a
run in a sweep takes the same code path as one started by hand, and tracks itself.

Launchers are plugins (hook ``rlx_register_launchers``); the built-ins are ``local``
(processes on this machine) and ``ray`` (tasks on a Ray cluster). A SLURM launcher would
implement the same five methods with ``sbatch``/``squeue``/``scancel``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunRequest:
    """One run for a launcher to start.

    ``argv`` are the arguments of the ``rlx`` command (without ``rlx`` itself); run it as
    ``[sys.executable, "-m", "rlx.cli.main", *argv]`` on a machine with rlx installed.
    ``env`` holds the variables the run needs on top of the launcher's environment
    (``RLX_RUN_ID``, ``RLX_HOME``, the sweep's ``RLX_SWEEP_*``): pass them through
    unchanged. The run's combined stdout and stderr go to ``log_path``."""

    run_id: str  # the rlx run id, assigned by the controller
    label: str  # cell and seed, e.g. "objective.loss_type=dapo s3": for tables and messages
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    threads: int = 1  # torch threads the run uses (its run.threads): what to reserve for it


@dataclass
class RunExit:
    """A run's process ended: its exit code (the rlx CLI's: 0 finished, 130/143 killed by
    a signal, 1-3 failed), or ``None`` with ``message`` when the launcher lost it (a node
    died, the task was never scheduled)."""

    run_id: str
    code: int | None
    message: str = ""
    where: str = ""  # the machine (and node) it ran on, where the launcher knows; shown by `rlx sweep --json`


class Launcher(ABC):
    """Starts runs and reports their ends. The controller calls, in its main thread:
    ``open`` once, then ``submit``/``poll`` until every run ended, then ``close``; and
    ``signal`` when the sweep is told to stop. A launcher never decides what runs."""

    @abstractmethod
    def open(self, max_parallel: int | None) -> int:
        """Connect or prepare. ``max_parallel`` is the user's ``--max-parallel`` (None: not
        given). Return how many runs the controller may keep in flight at once."""

    def threads_per_run(self, parallel: int) -> int:
        """torch threads for each run when ``parallel`` run at once: what a run may use
        without slowing its neighbours. Default: this machine's cores shared evenly."""
        return max(1, (os.cpu_count() or 1) // max(1, parallel))

    @abstractmethod
    def submit(self, request: RunRequest) -> None:
        """Start one run (or queue it where the launcher's scheduler decides); return at once."""

    @abstractmethod
    def poll(self) -> list[RunExit]:
        """The runs that ended since the last call; return at once."""

    @abstractmethod
    def signal(self, signum: int) -> None:
        """Pass ``signum`` (SIGINT or SIGTERM) once to every run in flight: each finishes its
        step, checkpoints and ends KILLED; a second call stops them at once."""

    @abstractmethod
    def close(self) -> None:
        """Release what ``open`` took. Runs still in flight are stopped (SIGTERM) and
        waited for; called however the sweep ends."""
