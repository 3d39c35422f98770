"""``rlx run --num-processes N``: the same run under ``accelerate launch``.

The parent validates the config (so bad input fails before any process starts), picks
the run id that every rank will share, and starts the launcher. On a machine without
CUDA it uses the CPU form that really starts N processes (``--cpu --num_processes N``
silently starts one) with gloo.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from rlx.errors import UsageError

ARGV: list[str] = []  # the command line rlx was started with (set by rlx.cli.main)


def child_args(argv: list[str]) -> list[str]:
    """The user's ``rlx run`` arguments without the launcher's own options."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--num-processes", "--accelerate-config"):
            skip = True
            continue
        if a.startswith(("--num-processes=", "--accelerate-config=")):
            continue
        out.append(a)
    return out


def free_port() -> int:
    """A port nothing listens on now: accelerate's default (29500) is shared by every
    multi-process run on the machine, so two at once (a sweep, two terminals) collide."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], num_processes: int, accelerate_config: Path | None,
           extra_env: dict[str, str] | None = None) -> int:
    """Run ``rlx <argv>`` (``run ...`` or ``runs resume ID``) in ``num_processes`` ranks;
    the ranks' exit code."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    env = dict(os.environ, RLX_RUN_ID=uuid.uuid4().hex[:12], PYTHONUNBUFFERED="1", **(extra_env or {}))
    if accelerate_config is not None:
        env["RLX_ACCELERATE_CONFIG"] = str(accelerate_config.resolve())  # recorded, so a resume reuses it
        if not accelerate_config.is_file():
            raise UsageError(f"accelerate config '{accelerate_config}' does not exist; write one with "
                             "`accelerate config --config_file FILE` or drop --accelerate-config")
        import yaml

        try:
            loaded = yaml.safe_load(accelerate_config.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UsageError(f"accelerate config '{accelerate_config}' is not valid YAML: "
                             f"{str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"accelerate config '{accelerate_config}' must be a YAML mapping of accelerate options")
        if loaded.get("distributed_type") == "MULTI_CPU" or loaded.get("use_cpu"):
            sys.stderr.write("warning: on one machine accelerate starts a single process for MULTI_CPU/use_cpu "
                             "configs; use distributed_type: MULTI_GPU (rlx sets ACCELERATE_USE_CPU=1 when "
                             "there is no CUDA)\n")
        cmd += ["--config_file", str(accelerate_config)]
        if num_processes > 1:
            cmd += ["--num_processes", str(num_processes)]
        if loaded.get("num_machines", 1) in (1, None) and not loaded.get("main_process_port"):
            cmd += ["--main_process_port", str(free_port())]
    else:
        cmd += ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    import torch

    if not torch.cuda.is_available():  # gloo on CPU; see the module docstring
        env["ACCELERATE_USE_CPU"] = "1"
    cmd += ["-m", "rlx.cli.main", *child_args(argv)]
    debug = "--debug" in argv
    # the launcher and its ranks get a process group of their own, so that a terminal's
    # Ctrl-C reaches them once, through this process (see _Forward), not twice (torch's
    # launcher forwards what it receives to the ranks as well); if this process dies, the
    # launcher gets SIGTERM and passes it on: the ranks checkpoint and end the run KILLED
    from rlx.interrupts import die_with_parent

    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, bufsize=1,
                            preexec_fn=die_with_parent(new_group=True))
    report: list[str] = []
    said: set[str] = set()
    try:
        with _Forward(proc):
            code = _relay(proc, report, said, debug)
    except KeyboardInterrupt:
        proc.wait()
        return 130
    if code and not debug:
        codes = [int(m) for m in re.findall(r"exitcode\s*:?\s*\(?(-?\d+)", "".join(report))]
        child = next((c for c in codes if c > 0), None)
        if child is None:
            sys.stderr.write(f"error: the {num_processes}-process run failed (launcher exit {code}); "
                             "rerun with --debug for the launcher's report\n")
        return child or code
    return code


def _relay(proc: subprocess.Popen, report: list[str], said: set[str], debug: bool) -> int:
    """Pass the ranks' stderr through; keep the launcher's own report back. The exit code."""
    for line in proc.stderr:  # type: ignore[union-attr]
        # the ranks' own lines pass through (an error every rank hit, once); the
        # launcher's own logging and failure report are kept back unless --debug
        if report or (not debug and _starts_report(line)):
            report.append(line)
            continue
        if not debug and _GLOG.match(line):
            report.append(line)
            continue
        if line.startswith("error: "):
            if line in said:
                continue
            said.add(line)
        sys.stderr.write(line)
    return proc.wait()


class _Forward:
    """SIGINT, SIGTERM and SIGHUP received here go to the ranks, each once: they finish the
    step, checkpoint together and end the run KILLED (rlx.interrupts); a second signal
    stops them at once. Sent to the ranks only: torch's launcher would forward a signal
    it got to them again, which they would take as the second one."""

    def __init__(self, proc: subprocess.Popen):
        from rlx.interrupts import handling

        self.proc = proc
        self._installed = handling(self._handle)

    def __enter__(self) -> "_Forward":
        self._installed.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._installed.__exit__(*exc)

    def _handle(self, signum: int, frame: object) -> None:
        import psutil

        try:
            ranks = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            ranks = []
        for p in ranks:
            try:
                p.send_signal(signum)
            except psutil.Error:
                pass
        if not ranks and self.proc.poll() is None:  # no rank started yet: stop the launcher itself
            self.proc.send_signal(signum)


_GLOG = re.compile(r"^[EWIF]\d{4} \d\d:\d\d:\d\d")  # torch's launcher logs in glog format


def _starts_report(line: str) -> bool:
    return line.startswith("Traceback (most recent call last)") or "ChildFailedError" in line


def is_child() -> bool:
    """True inside a process that ``accelerate launch`` started."""
    return "LOCAL_RANK" in os.environ


def exit_child(code: int) -> None:
    """Leave a distributed child without the gloo abort torch 2.13 sometimes hits at
    interpreter exit: drop the process group, flush, and skip interpreter teardown."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
