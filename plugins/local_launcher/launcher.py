"""Runs as child processes of the sweep's controller.

Each run is started in a process group of its own, so a terminal's Ctrl-C reaches the
controller alone, which passes it on once (``signal``); and with PR_SET_PDEATHSIG, so a
SIGKILLed controller leaves no run behind: each gets SIGTERM, checkpoints and ends KILLED.
Where there are GPUs, each run gets one through CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from rlx.launcher import Launcher, RunExit, RunRequest


@dataclass
class _Child:
    proc: subprocess.Popen
    log: IO[bytes]
    gpu: int | None


def gpu_count() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES where set, else what torch sees
    (torch is imported only on a machine with an NVIDIA driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    import torch

    return torch.cuda.device_count()


class LocalLauncher(Launcher):
    def __init__(self, config: Any):
        self.config = config
        self.children: dict[str, _Child] = {}
        self.gpus: list[str] = []

    def open(self, max_parallel: int | None) -> int:
        n = gpu_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpus = [d.strip() for d in visible.split(",") if d.strip()][:n] if visible else [str(i) for i in range(n)]
        if max_parallel:
            return max_parallel
        return len(self.gpus) or (os.cpu_count() or 1)

    def threads_per_run(self, parallel: int) -> int:
        return self.config.threads_per_run or super().threads_per_run(parallel)

    def submit(self, request: RunRequest) -> None:
        from rlx.interrupts import die_with_parent

        env = {**os.environ, **request.env}
        gpu = None
        if self.gpus:  # one GPU per run, the least used first
            used = [c.gpu for c in self.children.values()]
            gpu = min(range(len(self.gpus)), key=lambda i: used.count(i))
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[gpu]
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(request.log_path, "ab")
        try:
            # Popen in the caller's (main) thread: PDEATHSIG fires when the forking thread dies
            proc = subprocess.Popen([sys.executable, "-m", "rlx.cli.main", *request.argv], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=die_with_parent(new_group=True))
        except BaseException:
            log.close()
            raise
        self.children[request.run_id] = _Child(proc, log, gpu)

    def poll(self) -> list[RunExit]:
        out = []
        for run_id, child in list(self.children.items()):
            code = child.proc.poll()
            if code is not None:
                child.log.close()
                del self.children[run_id]
                out.append(RunExit(run_id, code if code >= 0 else 128 - code))
        return out

    def signal(self, signum: int) -> None:
        for child in self.children.values():
            if child.proc.poll() is None:
                try:  # the run itself, which passes it to its own helpers (the MLflow writer, ranks)
                    child.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        if not self.children:
            return
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_timeout_s
        for child in self.children.values():
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.proc.wait()
            child.log.close()
        self.children.clear()
