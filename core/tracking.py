"""MLflow tracking: one run per ``rlx run``; metrics buffered and sent with ``log_batch``
from a background thread so the training loop never waits on the store."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

from rlx.errors import RlxError

_FLUSH_EVERY_S = 1.0
_MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
_TICK = object()  # a queue timeout: time to send what is pending


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
        self.client, self.uri, self.run_id = _client(uri), uri, run_id
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
        self._queue: queue.Queue[tuple[str, float, int, int] | threading.Event | None] = queue.Queue()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._drain, name="rlx-mlflow", daemon=True)
        self._thread.start()

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100], synchronous=True)

    def _drain(self) -> None:
        from mlflow.entities import Metric

        pending: list[Metric] = []
        last = time.monotonic()
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=_FLUSH_EVERY_S)
            except queue.Empty:
                item = _TICK
            waiter = item if isinstance(item, threading.Event) else None
            stop = item is None
            if isinstance(item, tuple):
                pending.append(Metric(*item))
            urgent = stop or waiter is not None
            if pending and (urgent or len(pending) >= _MAX_BATCH or time.monotonic() - last >= _FLUSH_EVERY_S):
                self._send(pending)
                pending = []
                last = time.monotonic()
            if waiter is not None:
                waiter.set()

    def _send(self, metrics: list[Any]) -> None:
        for i in range(0, len(metrics), _MAX_BATCH):
            for attempt in range(6):
                try:
                    self.client.log_batch(self.run_id, metrics=metrics[i:i + _MAX_BATCH])
                    break
                except Exception as exc:  # a busy shared store: back off, then report at close
                    if attempt == 5:
                        self._error = exc
                    else:
                        time.sleep(0.5 * 2**attempt)

    def flush(self) -> None:
        """Block until every metric queued so far is in the store (before a checkpoint:
        what a checkpoint covers must never be lost to a crash)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout=300)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            if step > self._logged.get(k, -1):
                self._queue.put((k, float(v), ts, step))

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        if not rows:
            return
        columns = list(rows[0])
        data = {c: [r.get(c) for r in rows] for c in columns}
        self.client.log_table(self.run_id, data=data, artifact_file=artifact_file)

    def log_curve(self, points: list[list[Any]], artifact_file: str) -> None:
        """The evaluation metric against the step, as a PNG in the run (one figure, not per step)."""
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

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def close(self, status: str) -> None:
        """Flush every metric, then mark the run FINISHED, FAILED or KILLED."""
        self._queue.put(None)
        self._thread.join(timeout=120)
        self.client.set_terminated(self.run_id, status=status)
        if self._error is not None:
            raise RlxError(f"some metrics could not be sent to MLflow: {self._error}")
