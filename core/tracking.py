"""MLflow tracking: one run per ``rlx run``; metrics buffered and sent with ``log_batch``
from a background thread so the training loop never waits on the store.

``RLX_TRACKING=off`` (what ``rlx run --no-tracking`` sets) turns tracking off: the
Tracker creates no MLflow run, starts no writer and logs nothing (its ``run_id`` is
empty); the run still trains, checkpoints, saves its policy and is recorded in the
catalog.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rlx.errors import RlxError

_FLUSH_EVERY_S = 1.0
_MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_TICK = object()  # a queue timeout: time to send what is pending
# metrics wait for a starting writer process rather than being written from this one
# (MLflow's Python in a thread of the training process costs the loop GIL time) for up
# to this long and this many; a flush or the end of the run writes them at once
_HOLD_S = 60.0
_MAX_HELD = 200_000

Item = list  # one log_metrics call: [(key, value, timestamp_ms, step), ...]


def enabled() -> bool:
    """False when ``RLX_TRACKING`` is off, 0, false or no."""
    return os.environ.get("RLX_TRACKING", "on").strip().lower() not in ("off", "0", "false", "no")


def _client(uri: str) -> Any:
    import logging

    from mlflow.tracking import MlflowClient

    # MLflow's own INFO lines (schema migrations, ...) would bury the run's output;
    # set after the import, which configures mlflow's loggers
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


class Tracker:
    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any], artifact_root: Path | None = None):
        from rlx.home import store_lock

        self.uri = uri
        self._logged: dict[str, int] = {}
        self.enabled = enabled()
        if not self.enabled:
            self.run_id = ""
            return
        try:
            with store_lock(uri):  # schema creation and "create the experiment if missing" race otherwise
                self._create(experiment, run_name, tags, artifact_root)
        except RlxError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RlxError(f"cannot reach the MLflow store '{uri}': {type(exc).__name__}: {first}; check "
                           "--tracking-uri or MLFLOW_TRACKING_URI") from None
        self._log_params(params)
        self._start()

    def _create(self, experiment: str, run_name: str, tags: dict[str, str], artifact_root: Path | None) -> None:
        self.client = _client(self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = (artifact_root / experiment).as_uri() if artifact_root else None
            exp_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id

    @classmethod
    def reopen(cls, uri: str, run_id: str) -> "Tracker":
        """Continue an existing run: steps it already holds are not logged again, so a
        resumed run has every step exactly once."""
        self = cls.__new__(cls)
        self.uri, self.run_id, self._logged, self.enabled = uri, run_id, {}, enabled() and bool(run_id)
        if not self.enabled:  # tracking off now, or when the run started (no MLflow run to continue)
            self.run_id = ""
            return self
        self.client = _client(uri)
        try:
            run = self.client.get_run(run_id)
        except Exception as exc:
            raise RlxError(f"cannot reopen MLflow run {run_id} in '{uri}': {str(exc).splitlines()[0]}") from None
        # metrics are flushed in step order per key, so what is there is a prefix of steps
        self._logged = {k: max(m.step for m in self.client.get_metric_history(run_id, k)) for k in run.data.metrics}
        self.client.update_run(run_id, status="RUNNING")
        self._start()
        return self

    def _start(self) -> None:
        self._queue: queue.Queue[Item | threading.Event | None] = queue.Queue()
        self._error: Exception | str | None = None
        # a writer process takes over once it is ready (it imports MLflow, ~2 s): metrics
        # wait for it (see _HOLD_S); if it cannot start, is not ready in time or dies,
        # this process writes from its own thread
        self._writer: _WriterProcess | None = _WriterProcess.start(self.uri, self.run_id)
        self._hold_until = time.monotonic() + _HOLD_S
        self._thread = threading.Thread(target=self._drain, name="rlx-mlflow", daemon=True)
        self._thread.start()

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100], synchronous=True)

    def _drain(self) -> None:
        pending: list[tuple[str, float, int, int]] = []
        last = time.monotonic()
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=_FLUSH_EVERY_S)
            except queue.Empty:
                item = _TICK
            waiter = item if isinstance(item, threading.Event) else None
            stop = item is None
            if isinstance(item, list):
                pending.extend(item)
            urgent = stop or waiter is not None
            if pending and (urgent or len(pending) >= _MAX_BATCH or time.monotonic() - last >= _FLUSH_EVERY_S):
                if self._send(pending, urgent):
                    pending = []
                last = time.monotonic()
            if waiter is not None:
                self._sync()
                waiter.set()
        self._stop_writer()

    def _send(self, metrics: list[tuple[str, float, int, int]], urgent: bool = False) -> bool:
        """Hand ``metrics`` to the writer process or write them here; False: kept back
        until the writer is ready."""
        writer = self._writer
        if writer is not None:
            if writer.ready():
                if writer.send({"m": metrics}):
                    return True
                self._writer = None  # it died before taking these: write them here
            elif not (urgent or writer.dead or len(metrics) >= _MAX_HELD or time.monotonic() > self._hold_until):
                return False
        from mlflow.entities import Metric

        from rlx.tracking_writer import send_with_retry

        self._error = send_with_retry(self.client, self.run_id, [Metric(*m) for m in metrics], _MAX_BATCH) \
            or self._error
        return True

    def _sync(self) -> None:
        """Wait until the writer process has stored everything sent to it."""
        writer = self._writer
        if writer is not None and writer.used and not writer.round_trip("flush", "ack"):
            self._error = self._error or "the MLflow writer process stopped before storing every metric"
            self._writer = None

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            error = writer.close()
            if error:
                self._error = self._error or error

    def flush(self) -> None:
        """Block until every metric queued so far is in the store (before a checkpoint:
        what a checkpoint covers must never be lost to a crash)."""
        if not self.enabled:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout=300)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        ts = int(time.time() * 1000)
        logged = self._logged
        # one queue item per call: the drain thread wakes once per step, not once per metric
        items = [(k, float(v), ts, step) for k, v in metrics.items() if step > logged.get(k, -1)]
        if items:
            self._queue.put(items)

    def set_tags(self, tags: dict[str, str]) -> None:
        if not self.enabled:
            return
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def log_text(self, text: str, artifact_file: str) -> None:
        if not self.enabled:
            return
        self.client.log_text(self.run_id, text, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        if not self.enabled:
            return
        if not rows:
            return
        columns = list(rows[0])
        data = {c: [r.get(c) for r in rows] for c in columns}
        self.client.log_table(self.run_id, data=data, artifact_file=artifact_file)

    def log_curve(self, points: list[list[Any]], artifact_file: str) -> None:
        """The evaluation metric against the step, as a PNG in the run (one figure, not per step)."""
        if not self.enabled:
            return
        if len(points) < 2:
            return
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt

        key = points[0][1]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p[0] for p in points], [p[2] for p in points], marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        try:
            self.client.log_figure(self.run_id, fig, artifact_file)
        finally:
            plt.close(fig)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None) -> None:
        if not self.enabled:
            return
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def close(self, status: str) -> None:
        """Flush every metric, then mark the run FINISHED, FAILED or KILLED."""
        if not self.enabled:
            return
        self._queue.put(None)
        self._thread.join(timeout=300)
        self.client.set_terminated(self.run_id, status=status)
        if self._error is not None:
            raise RlxError(f"some metrics could not be sent to MLflow: {self._error}")


_spare: "_WriterProcess | None" = None  # started by prewarm(), taken by the next Tracker


def prewarm(uri: str | None = None) -> None:
    """Start the MLflow writer process now, for the next ``Tracker`` of this process to
    take: it imports MLflow and opens the store ``uri`` (~2 s of CPU) while the caller is
    still starting up (``rlx run`` calls this before importing torch and building the
    model) instead of competing with the first seconds of training for the CPU. Does
    nothing with tracking off or ``RLX_TRACKING_WRITER`` other than ``process``; an unused
    writer exits with this process."""
    global _spare
    if _spare is None and enabled() and os.environ.get("RLX_TRACKING_WRITER", "process") == "process":
        _spare = _WriterProcess._spawn([uri] if uri else [])


class _WriterProcess:
    """``python -m rlx.tracking_writer``, fed JSON lines; its replies are read by a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.is_ready = self.dead = self.used = False
        self._tokens = 0
        threading.Thread(target=self._read, name="rlx-mlflow-replies", daemon=True).start()

    @classmethod
    def start(cls, uri: str, run_id: str) -> "_WriterProcess | None":
        if os.environ.get("RLX_TRACKING_WRITER", "process") != "process":
            return None
        global _spare
        spare, _spare = _spare, None
        if spare is not None and spare.proc.poll() is None and spare.send({"open": [uri, run_id]}):
            spare.used = False
            return spare
        return cls._spawn([uri, run_id])

    @classmethod
    def _spawn(cls, args: list[str]) -> "_WriterProcess | None":
        try:
            proc = subprocess.Popen([sys.executable, "-m", "rlx.tracking_writer", *args],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True)
        except OSError:
            return None
        return cls(proc)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.replies.put(json.loads(line))
            except ValueError:  # not ours (a library printing to stdout)
                continue
        self.replies.put(None)

    def _next(self, timeout: float | None) -> dict[str, Any] | None:
        msg = self.replies.get(timeout=timeout) if timeout else self.replies.get_nowait()
        if msg is None:
            self.dead = True
        elif msg.get("ready"):
            self.is_ready = True
        return msg

    def ready(self) -> bool:
        """Started and not dead (never waits)."""
        while not self.is_ready and not self.dead:
            try:
                self._next(None)
            except queue.Empty:
                return False
        return self.is_ready and not self.dead

    def send(self, msg: dict[str, Any]) -> bool:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            self.dead = True
            return False
        self.used = True
        return True

    def round_trip(self, kind: str, answer: str, timeout: float = 300) -> dict[str, Any] | None:
        """Send ``{kind: n}`` and wait for the reply carrying ``answer``."""
        self._tokens += 1
        if not self.send({kind: self._tokens}):
            return None
        deadline = time.monotonic() + timeout
        while not self.dead:
            try:
                msg = self._next(max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                return None
            if msg is not None and answer in msg:
                return msg
        return None

    def close(self) -> str | None:
        """Stop it; an error if metrics it took were not all stored."""
        if not self.ready():  # never took any metric: nothing to wait for
            self.proc.kill()
            self.proc.wait()
            return None
        reply = self.round_trip("close", "closed")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if reply is None:
            return "the MLflow writer process stopped before storing every metric"
        return reply["closed"]
