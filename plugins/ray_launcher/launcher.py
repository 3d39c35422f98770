"""Launcher ``ray``: each run of a sweep is a Ray task that runs the run's ``rlx`` command
as a subprocess on whichever node has room.

Why a subprocess inside a task, not the training loop in the task itself: the run stays
an ordinary ``rlx`` process (its own signal handling, checkpoint on SIGINT/SIGTERM,
catalog and MLflow records), exactly as when started by hand or by the ``local`` launcher.

How a sweep's Ctrl-C reaches a run on another machine: ``signal`` notes the signal on a
small actor (the sweep's signal board), then ``ray.cancel(force=False)`` raises
KeyboardInterrupt in each task; the task reads the board and sends that signal to the
run's process group, then keeps waiting, so the task still returns the run's exit code.
The tasks also read the board every two seconds unprompted: Ray's interrupt is a
simulated SIGINT, which does not land in a worker whose SIGINT is ignored (a raylet
started from a background shell passes that on), and carries no signal number.

Ray is imported when the launcher opens, not when the plugin is listed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlx.errors import RlxError, UsageError
from rlx.interrupts import HANDLED, die_with_parent
from rlx.launcher import Launcher, RunExit, RunRequest
from rlx.plugins.ray_launcher.config import RayLauncherConfig

TAIL_BYTES = 100_000  # of a run's log, returned to the controller (the node may not share its disk)
_POLL_S = 0.25  # how often a task looks at its run: also how soon a cancel's KeyboardInterrupt lands
_BOARD_EVERY_S = 2.0  # how often a task reads the signal board unprompted
_CONNECT_TIMEOUT_S = 5.0
_HARD_STOP_S = 15.0  # at close, after the second SIGTERM: then the task is killed
_NO_CLUSTER_FIX = "start a cluster with `ray start --head` or drop launcher.address"


@dataclass
class NodeResult:
    """What a task reports about its run: where it ran and how it ended."""

    code: int
    node_id: str
    host: str
    log_size: int  # the log file's size at the end
    log_start: int  # where this run's part began (a resumed run appends to its earlier log)
    log_live: bool  # written at the request's log_path on the node as the run went
    log_tail: bytes  # the last TAIL_BYTES of this run's part


class _SignalBoard:
    """The signals a sweep's controller sent to each run, for its task to read:
    ``ray.cancel`` interrupts a task but carries no payload (SIGINT or SIGTERM)."""

    def __init__(self) -> None:
        # run id -> every signal sent, in order: a task that reads the board after two
        # (SIGINT, then SIGTERM) passes on both as they were, not the latest twice
        self.sent: dict[str, list[int]] = {}

    def send(self, run_ids: list[str], signum: int) -> None:
        for run_id in run_ids:
            self.sent.setdefault(run_id, []).append(int(signum))

    def read(self, run_id: str) -> list[int]:
        return list(self.sent.get(run_id, []))


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("the ray launcher needs Ray: pip install 'rlx[ray]' (or 'ray>=2.40')") from None
    return ray


# ---- on the node, inside the Ray task -----------------------------------------------------
#
# The task does not start the run itself but a small keeper process that starts it: when a
# Ray worker exits (force-cancelled, or its job's driver died) Ray SIGKILLs the worker's
# direct children, and a run killed so could not checkpoint or record its end. The keeper
# takes that SIGKILL; the run, its child, then gets SIGTERM (parent death) and ends KILLED
# with a checkpoint like any run stopped by a signal.

_KEEPER = "from rlx.plugins.ray_launcher.launcher import keeper_main; keeper_main()"


def _preexec() -> Callable[[], None]:
    die = die_with_parent(new_group=True)

    def preexec() -> None:
        # Ray's processes block SIGINT (so that a Ctrl-C at the driver's terminal does not
        # kill them) and a blocked mask survives exec: unblocked, or the run would never
        # see the sweep's SIGINT
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        die()

    return preexec


def keeper_main() -> None:
    """``python -c _KEEPER WORKER_PID COMMAND...``: run COMMAND, exit with its code.

    Signals sent to the process group reach the run directly; the keeper only ignores
    them. A SIGTERM that comes because the Ray worker died (parent death, set up by the
    task) is passed on to the run, which then stops; the run's own parent-death signal
    covers a SIGKILLed keeper."""
    worker, command = int(sys.argv[1]), sys.argv[2:]
    child: list[subprocess.Popen] = []

    def on_signal(signum: int, frame: Any) -> None:
        if os.getppid() != worker and child:  # the worker is gone: nobody else tells the run
            child[0].send_signal(signal.SIGTERM)

    for sig in HANDLED:  # a Python handler, not SIG_IGN: exec resets it, so the run gets the defaults
        signal.signal(sig, on_signal)
    if os.getppid() != worker:  # died before the handlers were in place
        sys.exit(128 + signal.SIGTERM)
    child.append(subprocess.Popen(command, preexec_fn=die_with_parent()))
    code = child[0].wait()
    sys.exit(128 - code if code < 0 else code)  # killed by a signal: the shell's 128+N


def _log_file(log_path: str) -> tuple[str, bool]:
    """Where the run's output goes on this node: the request's own path when its folder is
    here (this machine or a shared disk: readable while the run goes; appended to, as a
    resumed run continues its log), else a temporary file. The folder is not created: on a
    node of its own it would be clutter nobody reads."""
    folder = os.path.dirname(log_path)
    if folder and os.path.isdir(folder) and os.access(folder, os.W_OK):
        return log_path, True
    fd, path = tempfile.mkstemp(prefix="rlx-run-", suffix=".log")
    os.close(fd)
    return path, False


def _read_board(ray: Any, board: dict[str, Any], run_id: str) -> list[int] | None:
    """The signals sent to the run, in order, or None when the board cannot be read (not
    up yet, or gone with the controller). ``board`` caches the actor's handle."""
    try:
        if board.get("handle") is None:
            board["handle"] = ray.get_actor(board["name"])
        return [int(s) for s in ray.get(board["handle"].read.remote(run_id), timeout=10)]
    except Exception:
        board["handle"] = None
        return None


def _wait_forwarding(ray: Any, proc: subprocess.Popen, board: str, run_id: str, wakeups: int = 0) -> None:
    """Wait for the run to end, passing on each signal the controller sends. Runs in the
    task's (the worker's) main thread: that is where ray.cancel raises KeyboardInterrupt."""
    forwarded = 0
    cache: dict[str, Any] = {"name": board}
    next_read = time.monotonic() + _BOARD_EVERY_S
    while True:
        try:
            if wakeups or time.monotonic() >= next_read:
                woke, wakeups = wakeups, 0
                seen = _read_board(ray, cache, run_id)
                # woken but the board unreadable: a signal came all the same; SIGTERM also checkpoints
                sent = seen if seen is not None else [int(signal.SIGTERM)] * (forwarded + (1 if woke else 0))
                while forwarded < len(sent):
                    signum = sent[forwarded]
                    forwarded += 1
                    try:
                        os.killpg(proc.pid, signum)
                    except OSError:  # the run's group already ended
                        pass
                    if forwarded < len(sent):  # two at once would merge into one pending signal
                        time.sleep(0.2)
                next_read = time.monotonic() + _BOARD_EVERY_S
            if proc.poll() is not None:
                return
            time.sleep(_POLL_S)
        except KeyboardInterrupt:  # ray.cancel: the controller sent a signal
            wakeups += 1


def run_on_node(run_id: str, argv: list[str], env: dict[str, str], cwd: str, log_path: str,
                board: str) -> NodeResult:
    """The Ray task: run ``rlx ARGV`` here (under the keeper), wait, return how it ended.

    The keeper and the run get a process group of their own (the controller's signals go
    to it, and to whatever the run starts, e.g. ``accelerate launch`` ranks). Popen runs in
    this, the main, thread: the parent-death signal follows the thread that forked."""
    import ray

    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        # ray.cancel's interrupt lands only where Python handles SIGINT (see the module's doc)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    full_env = {**os.environ, **env}
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # Ray's GPU assignment wins over the controller's
        full_env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    command = [sys.executable, "-c", _KEEPER, str(os.getpid()), sys.executable, "-m", "rlx.cli.main", *argv]
    path, live = _log_file(log_path)
    proc: subprocess.Popen | None = None
    try:
        early = 0
        try:
            with open(path, "ab") as log:
                start = log.tell()
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=full_env, cwd=cwd if os.path.isdir(cwd) else None,
                                        preexec_fn=_preexec())
        except KeyboardInterrupt:  # a signal as the run started: it is passed on like any other
            if proc is None:
                raise
            early = 1
        _wait_forwarding(ray, proc, board, run_id, early)
        while True:  # a signal that comes as the run ends must not cost its exit code
            try:
                return _report(ray, proc.returncode, path, start, live)
            except KeyboardInterrupt:
                pass
    finally:
        if not live:
            try:
                os.unlink(path)
            except OSError:
                pass


def _report(ray: Any, code: int, path: str, start: int, live: bool) -> NodeResult:
    size = os.path.getsize(path)
    with open(path, "rb") as log:
        log.seek(max(start, size - TAIL_BYTES))
        tail = log.read()
    return NodeResult(code=128 - code if code < 0 else code,  # killed by a signal: the shell's 128+N
                      node_id=ray.get_runtime_context().get_node_id(), host=socket.gethostname(),
                      log_size=size, log_start=start, log_live=live, log_tail=tail)


# ---- on the controller --------------------------------------------------------------------


def _reachable(address: str) -> str | None:
    """Why ``host:port`` cannot be connected to, or None. ray.init itself retries an
    unreachable GCS for minutes; a sweep should fail at once."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _resolve_auto(ray: Any) -> str:
    """The address "auto" stands for (RAY_ADDRESS, or the cluster ``ray start`` recorded)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # Ray moved it: let ray.init find the cluster itself
        return "auto"
    try:
        return canonicalize_bootstrap_address("auto") or "auto"
    except ConnectionError:
        raise UsageError(f"launcher.address=auto: no Ray cluster runs on this machine; {_NO_CLUSTER_FIX}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _why_lost(ray: Any, exc: BaseException) -> str:
    """One line for a task that ended without the run's exit code."""
    e = ray.exceptions
    if isinstance(exc, e.TaskCancelledError):
        return "cancelled before it started"  # a task with its run under way returns the run's code
    if isinstance(exc, e.NodeDiedError):
        return "the Ray node it ran on died"
    if isinstance(exc, e.WorkerCrashedError):
        return "its Ray worker died (killed, or out of memory)"
    if isinstance(exc, e.RayTaskError):
        cause = getattr(exc, "cause", None)
        return "the Ray task failed: " + _first_line(cause if isinstance(cause, BaseException) else exc)
    return "Ray lost it: " + _first_line(exc)


class RayLauncher(Launcher):
    """Runs as Ray tasks reserving ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs each.

    ``results`` holds, by run id, where each finished run ran (node id, host) and its
    exit code: for messages and tests; the controller needs only ``poll``."""

    def __init__(self, config: RayLauncherConfig | None = None) -> None:
        self.config = config or RayLauncherConfig()
        self.results: dict[str, NodeResult] = {}
        self._in_flight: dict[Any, RunRequest] = {}  # ObjectRef -> its request
        self._connected = False  # this launcher called ray.init (and so calls ray.shutdown)
        self._board_name = f"rlx-signals-{uuid.uuid4().hex[:12]}"
        self._board: Any = None
        self._signalled: set[str] = set()  # runs that were sent a signal
        self._task: Any = None

    # -- open ---------------------------------------------------------------------------

    def open(self, max_parallel: int | None) -> int:
        ray = _ray()
        if not ray.is_initialized():  # else a program embedding rlx connected already: use that
            self._init(ray)
        fit = self._capacity(ray)
        self._task = ray.remote(run_on_node)
        # created now, without waiting: ready long before a Ctrl-C needs it
        self._board = ray.remote(num_cpus=0, max_restarts=0)(_SignalBoard).options(name=self._board_name).remote()
        return max_parallel if max_parallel else fit

    def _init(self, ray: Any) -> None:
        cfg = self.config
        where = cfg.address or "a private local instance"
        kwargs: dict[str, Any] = {"namespace": cfg.namespace, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if cfg.address is None:
            # "local", not None: None would follow RAY_ADDRESS to some other cluster
            kwargs.update(address="local", num_cpus=cfg.num_cpus or os.cpu_count() or 1, include_dashboard=False)
        elif cfg.address.startswith("ray://"):
            kwargs["address"] = cfg.address
            why = _reachable(cfg.address[len("ray://"):])
            if why:
                raise UsageError(f"cannot reach the Ray client server at {cfg.address} ({why}); {_NO_CLUSTER_FIX}")
        else:
            address = _resolve_auto(ray) if cfg.address == "auto" else cfg.address
            why = _reachable(address) if address != "auto" else None
            if why:
                raise UsageError(f"cannot reach the Ray cluster at {cfg.address}"
                                 + (f" ({address})" if address != cfg.address else "")
                                 + f": {why}; {_NO_CLUSTER_FIX}")
            kwargs.update(address=address, include_dashboard=False)
        # ray.init installs a SIGTERM handler that exits the process: the sweep's own
        # handlers (checkpoint its runs, record the sweep) must stay in charge
        saved = _handlers()
        if cfg.address is None and hasattr(signal, "SIGHUP"):
            # the private instance's processes inherit an ignored SIGHUP: a closed terminal
            # then stops the sweep (which stops its runs through them) but not Ray itself.
            # Ray already blocks SIGINT in them; a SIGTERM to the whole process group
            # (`timeout`, `kill -- -PGID`) still ends them: see README
            try:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            except ValueError:  # not the main thread
                pass
        # Ray's notice about its token authentication is not a line a sweep's user acts on
        auth_log = logging.getLogger("ray._private.authentication")
        level = auth_log.level
        auth_log.setLevel(logging.ERROR)
        try:
            ray.init(**kwargs)
        except ValueError as exc:
            if "ray[client]" in str(exc):
                raise UsageError("launcher.address=ray://... needs Ray Client: pip install 'ray[client]'") from None
            raise UsageError(f"cannot connect to Ray at {where}: {_first_line(exc)}; {_NO_CLUSTER_FIX}") from None
        except Exception as exc:
            raise UsageError(f"cannot connect to Ray at {where}: {_first_line(exc)}; {_NO_CLUSTER_FIX}") from None
        finally:
            auth_log.setLevel(level)
            _restore(saved)
        self._connected = True

    def _capacity(self, ray: Any) -> int:
        """Runs the cluster fits at once: per node (a run never spans nodes), summed."""
        cfg = self.config
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        fit = 0
        for res in nodes:
            runs = int(res.get("CPU", 0) // cfg.cpus_per_run)
            if cfg.gpus_per_run > 0:
                runs = min(runs, int(res.get("GPU", 0) / cfg.gpus_per_run + 1e-9))
            fit += runs
        if fit == 0:
            largest = max(nodes, key=lambda r: (r.get("CPU", 0), r.get("GPU", 0)), default={})
            need = f"{cfg.cpus_per_run} CPUs" + (f" and {cfg.gpus_per_run:g} GPUs" if cfg.gpus_per_run else "")
            has = f"{largest.get('CPU', 0):g} CPUs" + (f", {largest.get('GPU', 0):g} GPUs" if cfg.gpus_per_run else "")
            self._release(ray)
            raise UsageError(f"no node of the Ray cluster has room for one run ({need}; the largest has {has}); "
                             "lower launcher.cpus_per_run / launcher.gpus_per_run or add a larger node")
        return fit

    def threads_per_run(self, parallel: int) -> int:
        return self.config.cpus_per_run  # what Ray reserved for it, wherever it lands

    # -- runs ---------------------------------------------------------------------------

    def submit(self, request: RunRequest) -> None:
        if self._task is None:
            raise RlxError("the ray launcher was not opened")
        log_path = Path(request.log_path).absolute()
        log_path.parent.mkdir(parents=True, exist_ok=True)  # on this machine: where the log ends up
        cfg = self.config
        ref = self._task.options(num_cpus=cfg.cpus_per_run, num_gpus=cfg.gpus_per_run, max_retries=0,
                                 name=f"rlx {request.label or request.run_id}").remote(
            request.run_id, list(request.argv), dict(request.env), os.getcwd(), str(log_path), self._board_name)
        self._in_flight[ref] = request

    def poll(self) -> list[RunExit]:
        if not self._in_flight:
            return []
        ray = _ray()
        refs = list(self._in_flight)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return [self._finish(ray, ref) for ref in ready]

    def _finish(self, ray: Any, ref: Any) -> RunExit:
        request = self._in_flight.pop(ref)
        log_path = Path(request.log_path).absolute()
        try:
            result: NodeResult = ray.get(ref)
        except Exception as exc:
            why = _why_lost(ray, exc)
            _append(log_path, f"\n[rlx ray launcher] run {request.run_id}: {why}\n")
            return RunExit(request.run_id, None, why)
        self.results[request.run_id] = result
        _keep_log(log_path, result)
        return RunExit(request.run_id, result.code, where=f"{result.host} (ray node {result.node_id[:12]})")

    def signal(self, signum: int) -> None:
        self._send(list(self._in_flight), signum)

    def _send(self, refs: list[Any], signum: int) -> None:
        """``signum`` to the runs of ``refs``: noted on the board, then each task woken."""
        if not refs:
            return
        ray = _ray()
        run_ids = [self._in_flight[ref].run_id for ref in refs]
        try:  # the board first: a task that wakes up reads it
            ray.get(self._board.send.remote(run_ids, int(signum)), timeout=10)
        except Exception:  # the tasks then fall back to SIGTERM, which also checkpoints
            pass
        for ref in refs:
            self._signalled.add(self._in_flight[ref].run_id)
            try:
                ray.cancel(ref, force=False, recursive=True)
            except Exception:  # ended meanwhile
                pass

    def close(self) -> None:
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            return
        try:
            # runs not yet told to stop get SIGTERM; one that was told once is not told again
            # yet: a second signal would cut its step short, without a checkpoint of it
            self._send([r for r in self._in_flight if self._in_flight[r].run_id not in self._signalled],
                       signal.SIGTERM)
            self._wait_out(ray, self.config.stop_timeout_s)
            self._send(list(self._in_flight), signal.SIGTERM)  # the second signal: stop at once
            self._wait_out(ray, _HARD_STOP_S)
            for ref in list(self._in_flight):  # Ray kills the worker and the keeper; the run gets SIGTERM
                request = self._in_flight.pop(ref)
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
                _append(Path(request.log_path).absolute(),
                        f"\n[rlx ray launcher] run {request.run_id}: still running after two SIGTERMs "
                        f"({self.config.stop_timeout_s + _HARD_STOP_S:g} s); its Ray task was killed\n")
        finally:
            self._release(ray)

    def _wait_out(self, ray: Any, timeout: float) -> None:
        """Wait up to ``timeout`` s for the runs in flight; record those that end."""
        refs = list(self._in_flight)
        if refs:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
            for ref in ready:
                self._finish(ray, ref)

    def _release(self, ray: Any) -> None:
        if self._board is not None:
            try:
                ray.kill(self._board)
            except Exception:
                pass
            self._board = None
        self._task = None
        if self._connected:
            saved = _handlers()
            try:
                ray.shutdown()
            finally:
                _restore(saved)
            self._connected = False


def _handlers() -> dict[int, Any]:
    try:
        return {sig: signal.getsignal(sig) for sig in HANDLED}
    except ValueError:
        return {}


def _restore(saved: dict[int, Any]) -> None:
    for sig, handler in saved.items():
        try:
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        except (OSError, ValueError):  # not the main thread: ray.init could not install one either
            pass


def _append(path: Path, text: str) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        pass


def _keep_log(path: Path, result: NodeResult) -> None:
    """The run's log at ``path`` on this machine, once: left alone when the node wrote it
    there (same machine or shared disk: same size), else appended from the tail the task
    returned."""
    try:
        if result.log_live and path.stat().st_size == result.log_size:
            return
    except OSError:
        pass
    left = result.log_size - result.log_start - len(result.log_tail)
    head = f"[rlx ray launcher: the first {left} bytes of this log stayed on node {result.host}]\n".encode()
    try:
        with open(path, "ab") as f:
            f.write((head if left > 0 else b"") + result.log_tail)
    except OSError:
        pass
