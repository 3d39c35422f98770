"""A process that imports rlx's heavy dependencies once and forks one child per ``rlx``
command the tests run, so that each command starts in well under a second instead of
spending ~10 s of CPU importing torch, transformers and MLflow (the bulk of the suite's
time on CI's 2 cores).

Each child is a real process, set up as ``python -m rlx.cli.main ARGS`` would be: its own
working directory, environment, ``sys.path`` (the working directory, then PYTHONPATH,
then the interpreter's own), stdin from /dev/null, stdout and stderr to files, fresh
``random`` and numpy seeds, and an interpreter's exit less the module teardown (``_exit``). It
differs from a fresh interpreter in what was imported before it started: no rlx plugin,
registry or CLI module is preloaded (their import is what plugin tests look at), and a
warning a dependency prints while being imported shows up once in the zygote's stderr,
not in each command's, so tests about a command's own output use a fresh process
(``_cli.rlx(..., fresh=True)``). Anything else that Python reads only at start-up (a
PYTHON* variable, other than those in ``_cli.READ_WHEN_USED``, that differs from the
zygote's) also sends the command to a fresh process, with a warning in the test report.
``RLX_TEST_ZYGOTE=0`` sends every command there.

Protocol, one JSON line each way: the test process sends ``{id, argv, env, cwd, out, err,
session}``; the zygote answers ``{"id": id, "pid": n}`` once the child is forked and
``{"id": id, "code": n}`` when it has ended (``-N`` for signal N, as subprocess does). Children
run at once (two racing ``rlx runs resume`` are two children). ``session``: the child starts a
session of its own (``setsid``), as a terminal or a scheduler starts ``rlx run``, so that a
signal sent to its process group reaches it and its descendants and not the zygote.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

# what a run imports and keeps: torch (with torch._dynamo, which every optimizer pulls
# in), transformers' Llama/Qwen2 code, MLflow's client and SQL store, matplotlib
PRELOAD = ("torch", "torch._dynamo", "torch.optim", "transformers", "transformers.models.llama.modeling_llama",
           "transformers.models.qwen2.modeling_qwen2", "mlflow", "mlflow.tracking",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
           "matplotlib.pyplot", "accelerate", "gymnasium", "numpy", "safetensors.torch", "sqlmodel", "pydantic",
           "typer", "rich.console", "mlflow.transformers")


def _preload() -> None:
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional dependency: the child imports (or misses) it itself
            pass
    try:  # which installed distribution holds which module: logging any MLflow model reads
        # every installed distribution's metadata for it once per process (~1.3 s)
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()
    except Exception:
        pass
    try:  # the table of checkpoint key renamings transformers builds (~1,000 regexes, 0.6 s)
        # at a process's first from_pretrained, then keeps: every run loads a model
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        get_checkpoint_conversion_mapping("llama")
    except Exception:
        pass
    from _store_template import ENV, install

    store = os.environ.get(ENV, "0")
    if store != "0":
        install(Path(store))


def _child(req: dict, base_path: list[str]) -> int:
    """Runs in the forked child: become ``python -m rlx.cli.main ARGV`` and return its exit code."""
    import importlib
    import random
    import runpy

    if req.get("session"):
        os.setsid()
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *extra, *base_path]
    importlib.invalidate_caches()
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, path in ((1, req["out"]), (2, req["err"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    sys.argv = ["rlx", *req["argv"]]
    try:
        runpy.run_module("rlx.cli.main", run_name="__main__", alter_sys=True)
        return 0
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # as the interpreter: a traceback, then death by SIGINT
        traceback.print_exc()
        return -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1


def _exit(code: int) -> None:
    """End the child as the interpreter ends a process, less the final teardown of every
    module: wait for non-daemon threads, run the atexit handlers, flush the streams.

    Why: tearing down the preloaded torch/transformers/MLflow objects decrements every
    refcount, which copies each page the child shares with the zygote: 2.5 s of a 2.6 s
    ``rlx --help`` measured on this project's 2-core CPU."""
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: the interpreter ignores it at exit too
            pass
    if code < 0:  # ended by a signal: die of it, as the interpreter does after KeyboardInterrupt
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _lines(fd: int, buffer: bytearray) -> tuple[list[bytes], bool]:
    """The complete lines readable from ``fd`` now (it was ready); True once it is at its end."""
    chunk = os.read(fd, 65536)
    buffer += chunk
    *lines, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    return lines, not chunk


def serve() -> int:
    import select

    # the protocol keeps the pipes it was started with; stray prints go to stderr
    requests = os.dup(0)
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    base_path = sys.path[1:]  # this script's folder is sys.path[0]; a child gets its cwd there
    gc.disable()  # as gc.freeze's docs advise before a fork: no collection leaves freed gaps in shared pages
    _preload()
    gc.freeze()  # the preloaded objects are never collected, so a child's collections skip them
    if threading.active_count() != 1:  # a fork copies only this thread: another one's locks would hang the child
        replies.write(json.dumps({"unsafe": [t.name for t in threading.enumerate()]}) + "\n")
        replies.flush()
        return 0
    # a child's end wakes the select below through this pipe (SIGCHLD's wakeup fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)

    def reply(msg: dict) -> None:
        replies.write(json.dumps(msg) + "\n")
        replies.flush()

    reply({"ready": os.getpid()})
    children: dict[int, int] = {}  # pid -> request id
    buffer = bytearray()
    ended = False
    while not ended:
        try:
            ready, _, _ = select.select([requests, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 4096)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                reply({"id": children.pop(pid), "code": os.waitstatus_to_exitcode(status)})
        if requests not in ready:
            continue
        lines, ended = _lines(requests, buffer)
        for line in filter(None, lines):
            req = json.loads(line)
            sys.stdout.flush()  # nothing of the zygote's may land in the child's output
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (requests, wake_r, wake_w):
                    os.close(fd)
                replies.close()
                gc.enable()
                _exit(_child(req, base_path))
            children[pid] = req["id"]
            reply({"id": req["id"], "pid": pid})
    for pid in children:  # the test process is gone: so are its commands
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    sys.exit(serve())
