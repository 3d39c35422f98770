"""The process that writes a run's metrics to MLflow, so the training process does not.

MLflow's SQL store spends 0.15-0.5 ms of Python per metric in ``log_batch``; from a thread
of the training process that is GIL time taken from training (about 7% of a CartPole PPO
run's step time, measured). This process takes JSON lines on stdin and answers on stdout:

    {"m": [[key, value, timestamp_ms, step], ...], "seq": n}
                            log these; answer {"stored": n}, or {"failed": n, "error": ...}
    {"flush": n}            answer {"ack": n} once every batch before it is answered
    {"close": 1}            answer {"closed": null} and exit

and says {"ready": 1} once it can write. The training process keeps every batch until it
is answered, so a writer that dies or stalls loses nothing: the batches it held are
written again by the training process (MLflow drops exact duplicates).

Run as ``python -m rlx.tracking_writer URI RUN_ID [RLX_RUN_ID [OPTIONS]]``, or started
early with the store's URI alone (``rlx.tracking.prewarm``): it then imports MLflow and
opens the store (~2 s of CPU) while the training process is still starting up, not while
it trains, and waits for ``{"open": [URI, RUN_ID, RLX_RUN_ID, OPTIONS]}`` (end of input:
it exits). OPTIONS is a JSON object: ``system_metrics`` (bool) starts MLflow's system
metrics sampler here, so its sampling and writing cost the training process nothing;
``resumed`` (bool) continues the sampler's steps after those the run already has.

It ignores SIGINT, SIGTERM and SIGHUP: a terminal's Ctrl-C and a scheduler's SIGTERM go
to the whole process group, and the training process still needs its writer to store
the step in flight before it checkpoints and ends the run. It leaves when its input
closes. Input that closes without ``close`` means the training process died (SIGKILL,
out of memory): the writer stores what it was given, then ends the run CRASHED in MLflow
and in the catalog, so neither says RUNNING for a process that is gone.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any


def send_with_retry(client: Any, run_id: str, metrics: list[Any], max_batch: int) -> Exception | None:
    """``log_batch`` in chunks, backing off on a busy shared store; the last error, if any."""
    error = None
    for i in range(0, len(metrics), max_batch):
        for attempt in range(6):
            try:
                client.log_batch(run_id, metrics=metrics[i:i + max_batch])
                break
            except Exception as exc:  # SQLite "database is locked" under concurrent runs
                if attempt == 5:
                    error = exc
                else:
                    time.sleep(0.5 * 2**attempt)
    return error


def start_system_metrics(uri: str, run_id: str, resumed: bool, since: tuple[float, Any] | None = None) -> Any:
    """MLflow's own system-metrics sampler on the run (CPU, memory, disk, network; GPUs when
    nvidia-ml-py finds one), from a thread of this process; None if it cannot start.
    ``since`` (from ``cpu_mark()``) is where the first CPU sample's window opens; by default
    here. That window closes one sampling interval later, or when the sampler stops."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=uri)
        _measure_first_cpu_sample(monitor, since or cpu_mark())
        monitor.start()
        return monitor
    except Exception:  # no psutil, a store that refuses: the run's own metrics matter more
        return None


def cpu_mark() -> tuple[float, Any]:
    """The clock and the system's CPU times now: where a CPU-use window opens."""
    import psutil

    return time.monotonic(), psutil.cpu_times()


def busy_percent(before: Any, after: Any) -> float:
    """The share of CPU time not idle between two ``psutil.cpu_times()``, in percent (waiting
    on I/O counts as idle, and guest time is already inside user time, as psutil counts)."""
    fields = [f for f in before._fields if f not in ("guest", "guest_nice")]
    delta = {f: max(getattr(after, f) - getattr(before, f), 0.0) for f in fields}
    total = sum(delta.values())
    idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
    return round(100.0 * (total - idle) / total, 1) if total > 0 else 0.0


def _measure_first_cpu_sample(monitor: Any, since: tuple[float, Any]) -> None:
    """psutil's CPU figure covers the time since the calling thread's previous call, so the
    sampler's first one reads 0.0 (there was none). The first sample is taken instead one
    interval after ``since`` (the writer passes the moment the run was opened), or when the
    sampler stops if that is sooner, and covers the whole of that window: a short run's
    only sample is its CPU use from start to end, and a long run's samples follow each
    other without a gap or an overlap."""
    import psutil
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor

    # read here, not in the sampler's thread: an MLflow without them keeps its own first
    # sample rather than losing the thread to an AttributeError
    stopping, interval = getattr(monitor, "_shutdown_event", None), getattr(monitor, "sampling_interval", None)
    if stopping is None or interval is None:
        return
    for cpu in (m for m in monitor.monitors if isinstance(m, CPUMonitor)):
        plain = cpu.collect_metrics

        def first(cpu: Any = cpu, plain: Any = plain) -> None:
            stopping.wait(max(0.0, since[0] + interval - time.monotonic()))
            plain()  # memory now, and psutil's start for this thread's next CPU figure
            cpu._metrics["cpu_utilization_percentage"][-1] = busy_percent(since[1], psutil.cpu_times())
            cpu.collect_metrics = plain  # later samples are MLflow's own

        cpu.collect_metrics = first


def stop_system_metrics(monitor: Any) -> None:
    """Stop the sampler, then log the samples it took since its last write: a run shorter
    than the sampling interval still gets one point."""
    try:
        monitor.finish()
        pending = monitor.aggregate_metrics()
        if pending:
            monitor.publish_metrics(pending)
            monitor.mlflow_logger.flush()
    except Exception:
        pass


def _ignore_group_signals() -> None:
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_IGN)


def _end_crashed(client: Any, run_id: str, rlx_run_id: str, parent: int) -> None:
    """The training process ``parent`` is gone without ending its run: say so in both stores."""
    from rlx.status import CRASHED_ERROR, end_crashed_in_catalog, end_in_mlflow

    try:
        end_in_mlflow(client, run_id, "CRASHED", CRASHED_ERROR, if_running=True)
    except Exception:
        pass  # the catalog's reaping retries it on the next `rlx runs list`
    if rlx_run_id:
        try:
            end_crashed_in_catalog(rlx_run_id, parent)
        except Exception:
            pass


def main(argv: list[str]) -> int:
    _ignore_group_signals()
    parent = os.getppid()
    try:  # below the training process: its steps come first, the store can wait (a flush or
        os.nice(10)  # the run's end waits on this process, but training is idle then)
    except (AttributeError, OSError):
        pass
    mark = cpu_mark()  # the first CPU sample counts from here (or from the run's opening)
    from mlflow.entities import Metric

    from rlx.tracking import _MAX_BATCH, _client

    rlx_run_id, options = "", {}
    if len(argv) >= 2:
        uri, run_id = argv[:2]
        rlx_run_id = argv[2] if len(argv) > 2 else ""
        options = json.loads(argv[3]) if len(argv) > 3 else {}
        client = _client(uri)
    else:  # prewarmed: the run is named once the training process has created it
        client, early = None, argv[0] if argv else None
        if early:
            try:
                from rlx.home import store_lock

                with store_lock(early):  # the training process may be creating the same store
                    client = _client(early)
                    client.search_experiments(max_results=1)  # opens it: engine, tables, schema check
            except Exception:
                client = None  # the training process reports what is wrong with the store
        line = sys.stdin.readline()
        if not line:
            return 0
        opened = json.loads(line)["open"]
        mark = cpu_mark()
        uri, run_id = opened[0], opened[1]
        rlx_run_id = opened[2] if len(opened) > 2 else ""
        options = opened[3] if len(opened) > 3 else {}
        if client is None or uri != early:
            client = _client(uri)
    try:  # the run's first batch then finds the store open
        client.get_run(run_id)
    except Exception:
        pass  # log_batch reports what is wrong
    out = sys.stdout
    deaf = False  # the training process closed its end: keep storing, stop answering

    def say(msg: dict[str, Any]) -> None:
        nonlocal deaf
        if deaf:
            return
        try:
            out.write(json.dumps(msg) + "\n")
            out.flush()
        except (OSError, ValueError):
            deaf = True

    say({"ready": 1})
    monitor = start_system_metrics(uri, run_id, bool(options.get("resumed")), mark) if options.get("system_metrics") else None
    closed = False
    for line in sys.stdin:
        msg = json.loads(line)
        if "m" in msg:
            error = send_with_retry(client, run_id, [Metric(*m) for m in msg["m"]], _MAX_BATCH)
            if error is None:
                say({"stored": msg.get("seq")})
            else:
                say({"failed": msg.get("seq"), "error": f"{type(error).__name__}: {error}"})
        if "flush" in msg:
            say({"ack": msg["flush"]})
        if "close" in msg:
            closed = True
            break
    if monitor is not None:
        stop_system_metrics(monitor)  # its last samples, before the run is ended
    if closed:
        say({"closed": None})
    elif os.getppid() != parent:
        _end_crashed(client, run_id, rlx_run_id, parent)
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BrokenPipeError:  # the training process is gone and so is its end of the pipe
        code = 0
    # everything is stored and answered: skip the interpreter's teardown (MLflow's exit
    # handlers take ~1 s, which the training process would wait for at the end of a run)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)
