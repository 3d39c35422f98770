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
from collections.abc import Iterator
from contextlib import contextmanager
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

    # a run's output holds rlx's lines: no download/upload progress bars from MLflow
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    # MLflow's own INFO lines (schema migrations, ...) would bury the run's output;
    # set after the import, which configures mlflow's loggers
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str, artifact_root: Path | None) -> str:
    """The id of experiment ``name``, created (its artifacts under ``artifact_root``) if
    missing. Call it under ``home.store_lock``: two processes creating it race otherwise."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (artifact_root / name).as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


class Tracker:
    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any], artifact_root: Path | None = None, rlx_run_id: str = "",
                 system_metrics: bool = False):
        from rlx.home import store_lock

        self.uri = uri
        self.rlx_run_id = rlx_run_id
        self._options = {"system_metrics": system_metrics, "resumed": False}
        self._logged: dict[str, int] = {}
        self.enabled = enabled()
        self.experiment_id = ""
        if not self.enabled:
            self.run_id = ""
            return
        try:
            with store_lock(uri):  # schema creation and "create the experiment if missing" race otherwise
                self._create(experiment, run_name, {**tags, "rlx.status": "RUNNING"}, artifact_root)
        except RlxError:
            raise
        except Exception as exc:
            raise RlxError(f"cannot reach the MLflow store '{uri}': {_first_line(exc)}; check "
                           "--tracking-uri or MLFLOW_TRACKING_URI") from None
        try:
            self._log_params(params)
        except Exception as exc:
            self._end_quietly("FAILED", f"could not log the run's params: {_first_line(exc)}")
            raise RlxError(f"cannot log to the MLflow store '{uri}': {_first_line(exc)}") from None
        self._start()

    def _create(self, experiment: str, run_name: str, tags: dict[str, str], artifact_root: Path | None) -> None:
        _check_reachable(self.uri)
        self.client = _client(self.uri)
        self.experiment_id = experiment_id(self.client, experiment, artifact_root)
        from rlx.mlflow_views import ensure_views

        ensure_views(self.client, self.experiment_id, [m for m in tags.get("rlx.headline", "").split(",") if m])
        self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    @classmethod
    def reopen(cls, uri: str, run_id: str, rlx_run_id: str = "", system_metrics: bool = False) -> "Tracker":
        """Continue an existing run: steps it already holds are not logged again, so a
        resumed run has every step exactly once."""
        self = cls.__new__(cls)
        self.uri, self.run_id, self.rlx_run_id, self._logged = uri, run_id, rlx_run_id, {}
        self._options = {"system_metrics": system_metrics, "resumed": True}
        self.experiment_id = ""
        self.enabled = enabled() and bool(run_id)
        if not self.enabled:  # tracking off now, or when the run started (no MLflow run to continue)
            self.run_id = ""
            return self
        try:
            _check_reachable(uri)
            self.client = _client(uri)
            run = self.client.get_run(run_id)
            self.experiment_id = run.info.experiment_id
            # metrics are stored in step order per key, so what is there is a prefix of steps
            self._logged = {k: max(m.step for m in self.client.get_metric_history(run_id, k))
                            for k in run.data.metrics}
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "rlx.status", "RUNNING")
            if "rlx.error" in run.data.tags:
                self.client.delete_tag(run_id, "rlx.error")
            from rlx.status import clear_note

            clear_note(self.client, run)
        except RlxError:
            raise
        except Exception as exc:
            raise RlxError(f"cannot reopen MLflow run {run_id} in '{uri}': {_first_line(exc)}") from None
        self._start()
        return self

    def _start(self) -> None:
        self._queue: queue.Queue[Item | threading.Event | None] = queue.Queue()
        self._error: str | None = None
        # a writer process takes over once it is ready (it imports MLflow, ~2 s): metrics
        # wait for it (see _HOLD_S); if it cannot start, is not ready in time, dies or
        # stalls, this process writes from its own thread, the writer's unanswered
        # batches included
        self._writer: _WriterProcess | None = _WriterProcess.start(self.uri, self.run_id, self.rlx_run_id,
                                                                   self._options)
        self._monitor = None
        self._opened_at = None  # the run's opening: where a sampler started here opens its first CPU window
        if self._options["system_metrics"]:
            from rlx.tracking_writer import cpu_mark, start_system_metrics

            # kept for a sampler that replaces a writer that never got ready, as the writer's own would
            self._opened_at = cpu_mark()
            if self._writer is None:  # no writer process: the sampler runs here (a thread waking every 10 s)
                self._monitor = start_system_metrics(self.uri, self.run_id, self._options["resumed"],
                                                     self._opened_at)
        self._hold_until = time.monotonic() + _HOLD_S
        self._thread = threading.Thread(target=self._drain, name="rlx-mlflow", daemon=True)
        self._thread.start()

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # an unset setting is left out (the UI shows "-"), not logged as the string "None"
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if v is not None]
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
            if self._writer is not None and self._writer.dead:
                self._take_over()
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
                if not writer.send_metrics(metrics):
                    self._take_over()  # it died: what it held, these included, is written here
                return True
            if not (urgent or writer.dead or len(metrics) >= _MAX_HELD or time.monotonic() > self._hold_until):
                return False
        self._write_here(metrics)
        return True

    def _write_here(self, metrics: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        from rlx.tracking_writer import send_with_retry

        error = send_with_retry(self.client, self.run_id, [Metric(*m) for m in metrics], _MAX_BATCH)
        if error is not None:
            self._error = self._error or f"{type(error).__name__}: {_first_line(error)}"

    def _take_over(self, ending: bool = False, never_ready: bool = False) -> None:
        """The writer died or stalled (or, ``ending``, was closed; ``never_ready``: closed
        before it was ready): stop it and write what it took but never stored."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        held = writer.take_back()
        if self._options["system_metrics"] and self._monitor is None and not ending:
            from rlx.tracking_writer import start_system_metrics

            # the sampler died with the writer (or never started with it): it samples here.
            # One that never started took no sample: this one's first covers the run from
            # its opening (started at the run's end, a window from now would be empty: 0.0)
            self._monitor = start_system_metrics(self.uri, self.run_id, resumed=True,
                                                 since=self._opened_at if never_ready else None)
        if writer.errors:
            self._error = self._error or writer.errors[0]
        if held:
            self._write_here(held)

    def _sync(self) -> None:
        """Wait until the writer process has answered for everything sent to it."""
        writer = self._writer
        if writer is not None and writer.used and not writer.round_trip("flush", "ack", timeout=_stall_s()):
            self._take_over()

    def _stop_writer(self) -> None:
        """Close the writer; whatever it did not answer for is then written here. A writer
        still starting (the run was shorter than its start-up) is stopped, and the system
        metrics it was to sample are sampled here instead, so the run has them too."""
        if self._writer is not None:
            starting = not self._writer.ready()
            self._writer.close()
            self._take_over(ending=not starting, never_ready=starting)

    def _wait(self, done: threading.Event | threading.Thread) -> bool:
        """Wait for the drain thread; a writer that stalls past ``RLX_WRITER_STALL_S`` is
        stopped (its held batches are then written here) rather than waited on forever."""
        def finished(timeout: float) -> bool:
            if isinstance(done, threading.Event):
                return done.wait(timeout)
            done.join(timeout)
            return not done.is_alive()

        if finished(_stall_s()):
            return True
        writer = self._writer
        if writer is not None:
            writer.kill()  # unblocks a drain thread stuck writing to a full pipe
        return finished(_stall_s() + 60)

    def flush(self) -> None:
        """Block until every metric queued so far is in the store (before a checkpoint:
        what a checkpoint covers must never be lost to a crash)."""
        if not self.enabled:
            return
        done = threading.Event()
        self._queue.put(done)
        if not self._wait(done):
            self._error = self._error or "the MLflow store did not take the metrics in time"

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

    def log_inputs(self, datasets: list[Any]) -> None:
        """``rlx.DatasetInfo`` entries as the run's inputs: the run page's Datasets, the
        runs table's Dataset column."""
        if not self.enabled or not datasets:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = []
        for d in datasets:
            source = {"uri": d.source} if d.source_type != "procedural" else {"generator": d.source}
            schema = {"mlflow_colspec": [{"name": c, "type": "string"} for c in d.columns]} if d.columns else {}
            profile = {k: v for k, v in (("num_rows", d.rows), ("settings", d.settings)) if v is not None}
            inputs.append(DatasetInput(
                Dataset(name=d.name, digest=d.digest[:36], source_type=d.source_type, source=json.dumps(source),
                        schema=json.dumps(schema) if schema else None,
                        profile=json.dumps(profile, default=str) if profile else None),
                tags=[InputTag("mlflow.data.context", d.context)]))
        self.client.log_inputs(self.run_id, datasets=inputs)

    def log_text(self, text: str, artifact_file: str) -> None:
        if not self.enabled:
            return
        self.client.log_text(self.run_id, text, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """The rows as an MLflow table artifact, replacing any earlier one. (MLflow's own
        ``log_table`` appends to an existing file, which a resumed run would fill with the
        rows it already logged before it stopped, and it downloads the old file to do so.)"""
        if not self.enabled or not rows:
            return
        columns = list(rows[0])
        # the JSON layout MLflow's tables use (pandas' orient="split"), which its UI reads
        table = {"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]}
        self.client.log_text(self.run_id, json.dumps(table), artifact_file)
        self.mark_tables([artifact_file])

    def mark_tables(self, artifact_files: list[str]) -> None:
        """Have MLflow (its UI, ``mlflow.load_table``) read these logged JSON artifacts as
        tables: they are found through the run's ``mlflow.loggedArtifacts`` tag only."""
        if not self.enabled or not artifact_files:
            return
        logged = json.loads(self.client.get_run(self.run_id).data.tags.get("mlflow.loggedArtifacts", "[]"))
        new = [e for e in ({"path": f, "type": "table"} for f in artifact_files) if e not in logged]
        if new:
            self.client.set_tag(self.run_id, "mlflow.loggedArtifacts", json.dumps([*logged, *new]))

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

    @contextmanager
    def fluent_store(self) -> Iterator[None]:
        """MLflow's fluent API (``mlflow.<flavour>.log_model``, ``mlflow.register_model``)
        pointed at this run's store for the duration; as it was afterwards."""
        import mlflow

        previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        mlflow.set_tracking_uri(self.uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)

    def new_model(self, name: str, step: int = 0) -> Any:
        """A new MLflow model (LoggedModel) of this run, in its experiment, for
        ``Policy.log_model`` to fill (inside ``fluent_store``)."""
        import mlflow

        from rlx.policy import ModelTarget

        model = mlflow.initialize_logged_model(name=name, source_run_id=self.run_id,
                                               experiment_id=self.experiment_id)
        return ModelTarget(model.model_id, self.run_id, name, self.uri, step)

    def drop_model(self, model_id: str) -> None:
        """Delete an MLflow model nothing was logged into."""
        self.client.delete_logged_model(model_id)

    def register_model(self, model_id: str, name: str) -> str:
        """Register MLflow model ``model_id`` under ``name`` (a new version each call); the
        version's number. The client's calls, not ``mlflow.register_model``, which prints
        its own lines to the run's output."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = self.client.create_model_version(name, source=f"models:/{model_id}", run_id=self.run_id,
                                                   model_id=model_id)
        # the model's own record of its versions: the run page's "Logged models" reads it
        listed = json.loads(self.client.get_logged_model(model_id).tags.get("mlflow.modelVersions", "[]"))
        self.client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(
            [*listed, {"name": version.name, "version": version.version}])})
        return str(version.version)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None) -> None:
        if not self.enabled:
            return
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def close(self, status: str, error: str = "", step: int | None = None) -> str | None:
        """Store every metric, then end the run with ``status`` (rlx's word: FINISHED,
        FAILED, KILLED), ``error`` as its reason and ``step`` as the last one it reached.
        Returns what went wrong with the metrics, if anything, rather than raising: the
        run's status is recorded either way."""
        if not self.enabled:
            return None
        self._queue.put(None)
        if not self._wait(self._thread):
            self._error = self._error or "the MLflow store did not take the last metrics in time"
        if self._monitor is not None:
            from rlx.tracking_writer import stop_system_metrics

            stop_system_metrics(self._monitor)
        from rlx.status import end_in_mlflow

        end_in_mlflow(self.client, self.run_id, status, error, step=step)
        return f"some metrics could not be stored in MLflow: {self._error}" if self._error else None

    def _end_quietly(self, status: str, error: str) -> None:
        try:
            from rlx.status import end_in_mlflow

            end_in_mlflow(self.client, self.run_id, status, error)
        except Exception:
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _stall_s() -> float:
    """How long a flush waits on the writer process before writing in-process instead."""
    try:
        return max(float(os.environ.get("RLX_WRITER_STALL_S", "120")), 0.1)
    except ValueError:
        return 120.0


def _check_reachable(uri: str) -> None:
    """An HTTP tracking server that does not answer fails within seconds, not after
    MLflow's retries (minutes of silence)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: MLflow's own calls say what is wrong
    except (OSError, ValueError) as exc:
        from rlx.errors import UsageError

        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach the MLflow tracking server '{uri}': {reason}; start it "
                         "(`mlflow server`) or check --tracking-uri / MLFLOW_TRACKING_URI") from None


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
    """``python -m rlx.tracking_writer``, fed JSON lines; its replies are read by a thread.
    Every batch of metrics is kept until the writer answers that it is stored."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.is_ready = self.dead = self.used = False
        self.errors: list[str] = []  # batches the writer could not store
        self._tokens = 0
        self._seq = 0
        self._lock = threading.Lock()
        self._unanswered: dict[int, list[Any]] = {}
        self._reader = threading.Thread(target=self._read, name="rlx-mlflow-replies", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, uri: str, run_id: str, rlx_run_id: str = "",
              options: dict[str, Any] | None = None) -> "_WriterProcess | None":
        if os.environ.get("RLX_TRACKING_WRITER", "process") != "process":
            return None
        global _spare
        spare, _spare = _spare, None
        opened = [uri, run_id, rlx_run_id, options or {}]
        if spare is not None and spare.proc.poll() is None and spare.send({"open": opened}):
            spare.used = False
            return spare
        return cls._spawn([uri, run_id, rlx_run_id, json.dumps(options or {})])

    @classmethod
    def _spawn(cls, args: list[str]) -> "_WriterProcess | None":
        try:
            # its own session: Ctrl-C at a terminal and a closed terminal's SIGHUP reach the
            # training process, which ends the run; the writer must outlive them to store
            # the step in flight (it also ignores them, for signals sent to a process group)
            proc = subprocess.Popen([sys.executable, "-m", "rlx.tracking_writer", *args],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, start_new_session=True)
        except OSError:
            return None
        return cls(proc)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:  # not ours (a library printing to stdout)
                continue
            if not isinstance(msg, dict):
                continue
            if "stored" in msg or "failed" in msg:
                with self._lock:
                    self._unanswered.pop(msg.get("stored", msg.get("failed")), None)
                if "failed" in msg:
                    self.errors.append(str(msg.get("error")))
                continue
            self.replies.put(msg)
        self.dead = True
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

    def send_metrics(self, metrics: list[Any]) -> bool:
        """Hand over one batch; it stays with us until the writer says it is stored."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._unanswered[seq] = metrics
        return self.send({"m": metrics, "seq": seq})

    def take_back(self) -> list[Any]:
        """Stop the writer and return the metrics it took but never said it stored."""
        self.kill()
        self._reader.join(timeout=10)  # every answer it gave before it stopped is counted
        with self._lock:
            held = [m for seq in sorted(self._unanswered) for m in self._unanswered[seq]]
            self._unanswered.clear()
        return held

    def kill(self) -> None:
        self.dead = True
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass

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

    def close(self) -> None:
        """Ask it to finish and wait for it (``take_back`` then returns what it left undone)."""
        if not self.ready():  # never took any metric: nothing to wait for
            self.kill()
            return
        if self.round_trip("close", "closed", timeout=_stall_s()) is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
