"""How a run answers the signals that end processes.

SIGINT (Ctrl-C), SIGTERM (what SLURM, Kubernetes and ``timeout`` send first) and SIGHUP
(the terminal closed) all mean "stop, but keep what was done": the first one lets the
step in flight finish, writes a checkpoint and ends the run KILLED. A second one stops at
once (the run still ends KILLED, resumable from its newest checkpoint). While the final
policy is being saved, a first signal only says that the save is finishing; while the
run's end is being recorded, signals wait, so both stores always get the status.

Under ``accelerate launch`` the same signal can reach a rank twice within moments (the
scheduler signals every process, and the launcher forwards what it receives); such
repeats count once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

HANDLED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
_REPEAT_S = 3.0  # under a launcher: the same signal again within this long is the same request


@contextmanager
def handling(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGINT, SIGTERM and SIGHUP while the block runs (in the main thread;
    elsewhere Python cannot install handlers), the previous handlers after it."""
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in HANDLED:
            try:
                old[sig] = signal.signal(sig, handler)
            except (OSError, ValueError):
                pass
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def die_with_parent(new_group: bool = False) -> Callable[[], None]:
    """A ``preexec_fn``: on Linux the child gets SIGTERM when this process dies, even by
    SIGKILL (SIGTERM, so that it can pass the signal on and end cleanly); with
    ``new_group`` it also gets a process group of its own."""
    parent = os.getpid()
    libc = None
    if sys.platform.startswith("linux"):
        try:  # loaded here, before the fork: loading a library in the child can deadlock
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            pass

    def preexec() -> None:
        if new_group:
            os.setpgid(0, 0)
        if libc is None:
            return
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            # not a signal: until exec the child has the parent's Python handlers, which never run
            os._exit(1)

    return preexec


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal. ``exit_code`` is the shell's convention, 128 + signal."""

    def __init__(self, signum: int, message: str = "", hard: bool = False):
        super().__init__(message or f"interrupted by {signal_name(signum)}")
        self.signum = signum
        self.message = message or f"interrupted by {signal_name(signum)}"
        self.hard = hard  # raised where the signal landed, mid-step: no checkpoint of that step

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Signals:
    """Installs the run's handlers (main thread only) and restores the old ones on exit.

    ``phase`` says what a signal does: ``train`` (first: note it, the loop checkpoints
    and stops; second: raise now), ``save`` (first: note it and let the save finish;
    second: raise now) and ``record`` (never raise: the end of the run is being written).
    Inside ``holding()`` a second signal waits for the block's end.
    """

    def __init__(self, dedupe_repeats: bool = False) -> None:
        self.received: int | None = None  # the first signal
        self.phase = "train"
        self._dedupe = dedupe_repeats
        self._last: tuple[int, float] | None = None
        self._held: int | None = None  # a second signal that came inside holding()
        self._holding = False
        self._installed = handling(self._handle)

    def __enter__(self) -> "Signals":
        self._installed.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._installed.__exit__(*exc)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """A block that a second signal must not cut in two, such as a catalog transaction:
        an exception raised inside SQLAlchemy's commit can leave SQLite's write lock held,
        and then the run's end cannot be recorded. The signal takes effect as the block ends."""
        outer, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = outer
        if not outer and self._held is not None:
            signum, self._held = self._held, None
            raise RunInterrupted(signum, f"stopped at once by a second signal ({signal_name(signum)})", hard=True)

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        repeat = self._last is not None and self._last[0] == signum and now - self._last[1] < _REPEAT_S
        self._last = (signum, now)
        if self._dedupe and repeat:
            return
        name = signal_name(signum)
        if self.received is None:
            self.received = signum
            if self.phase == "train":
                _say(f"{name}: finishing the step in flight, then checkpointing ({name} again to stop at once)")
            elif self.phase == "save":
                _say(f"{name}: the final policy is being saved; it finishes in a moment ({name} again to abort)")
            return
        if self.phase == "record":
            return
        if self._holding:
            self._held = signum
            return
        raise RunInterrupted(signum, f"stopped at once by a second signal ({name})", hard=True)


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # the terminal that sent SIGHUP is gone
        pass
