"""Metrics reach the MLflow store through the writer process, through the in-process
fallback, and when the writer dies mid-run."""

from __future__ import annotations

import time

import pytest

from rlx.tracking import Tracker


def _history(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def _wait_ready(tracker: Tracker, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not tracker._writer.ready():
        assert time.monotonic() < deadline, "writer process never became ready"
        time.sleep(0.05)


def test_writer_process_stores_everything_and_flush_waits(tmp_path, monkeypatch):
    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", "run", {}, {"a": 1})
    _wait_ready(tracker)
    for step in range(1, 301):
        tracker.log_metrics({"x": float(step), "y": step * 0.5}, step)
    tracker.flush()
    assert tracker._writer is not None and tracker._writer.used  # the process took them
    assert _history(uri, tracker.run_id, "x") == list(range(1, 301))  # stored before flush returned
    tracker.log_metrics({"x": 301.0}, 301)
    proc = tracker._writer.proc
    tracker.close("FINISHED")
    assert proc.poll() is not None  # the writer exited
    assert _history(uri, tracker.run_id, "x")[-1] == 301


def test_in_process_writing_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("RLX_TRACKING_WRITER", "thread")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", "run", {}, {})
    assert tracker._writer is None
    for step in range(1, 51):
        tracker.log_metrics({"x": float(step)}, step)
    tracker.close("FINISHED")
    assert _history(uri, tracker.run_id, "x") == list(range(1, 51))


@pytest.mark.parametrize("when", ["before_ready", "after_flush"])
def test_a_dead_writer_loses_nothing(tmp_path, monkeypatch, when):
    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", "run", {}, {})
    if when == "after_flush":
        _wait_ready(tracker)
        tracker.log_metrics({"x": 1.0}, 1)
        tracker.flush()
    tracker._writer.proc.kill()
    tracker._writer.proc.wait()
    for step in range(2, 41):
        tracker.log_metrics({"x": float(step)}, step)
    tracker.close("FINISHED")
    steps = _history(uri, tracker.run_id, "x")
    assert steps[-39:] == list(range(2, 41)) and (when == "before_ready" or steps[0] == 1)


def test_a_writer_that_stalls_then_dies_loses_nothing(tmp_path, monkeypatch):
    """Batches handed to a writer are kept until it says they are stored: a writer stopped
    (SIGSTOP) while it holds steps 5-7 and then killed loses none of them."""
    import os
    import signal

    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", "run", {}, {})
    _wait_ready(tracker)
    for step in range(1, 5):
        tracker.log_metrics({"x": float(step)}, step)
    tracker.flush()
    writer = tracker._writer
    os.kill(writer.proc.pid, signal.SIGSTOP)
    for step in range(5, 8):
        tracker.log_metrics({"x": float(step)}, step)
        time.sleep(1.2)  # past the send interval: each step goes to the stopped writer
    assert writer.used and writer._unanswered  # handed over, not stored
    os.kill(writer.proc.pid, signal.SIGKILL)
    tracker.log_metrics({"x": 8.0}, 8)
    assert tracker.close("FINISHED") is None
    assert _history(uri, tracker.run_id, "x") == list(range(1, 9))


def test_a_stalled_writer_is_replaced_within_the_stall_limit(tmp_path, monkeypatch):
    """A writer that stops answering (here: stopped for good) holds up a flush for
    RLX_WRITER_STALL_S at most; the metrics are then written by the training process."""
    import os
    import signal

    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    monkeypatch.setenv("RLX_WRITER_STALL_S", "3")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", "run", {}, {})
    _wait_ready(tracker)
    tracker.log_metrics({"x": 1.0}, 1)
    tracker.flush()
    proc = tracker._writer.proc
    os.kill(proc.pid, signal.SIGSTOP)
    for step in range(2, 6):
        tracker.log_metrics({"x": float(step)}, step)
    t0 = time.monotonic()
    tracker.flush()
    assert time.monotonic() - t0 < 30
    assert _history(uri, tracker.run_id, "x") == list(range(1, 6))  # stored before flush returned
    assert proc.poll() is not None and tracker._writer is None  # the stalled writer was stopped
    assert tracker.close("FINISHED") is None


def test_the_writer_outlives_signals_sent_to_the_process_group(tmp_path, monkeypatch):
    """Ctrl-C, SIGTERM and SIGHUP sent to a process group (a terminal, a scheduler) do not
    stop the writer: the training process still needs it to store the step in flight."""
    import os
    import signal

    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", "run", {}, {})
    _wait_ready(tracker)
    proc = tracker._writer.proc
    assert os.getpgid(proc.pid) != os.getpgid(0)  # not in this process group at all
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(proc.pid, sig)
    time.sleep(0.5)
    assert proc.poll() is None
    for step in range(1, 4):
        tracker.log_metrics({"x": float(step)}, step)
    tracker.flush()
    assert tracker._writer is not None and tracker._writer.proc is proc
    assert tracker.close("KILLED") is None
    assert _history(uri, tracker.run_id, "x") == [1, 2, 3]


def test_a_run_that_ends_before_the_writer_is_ready_still_gets_system_metrics(tmp_path, monkeypatch):
    """The writer process samples the system metrics; a run shorter than its start-up (a
    short run on a busy machine) waits for it rather than ending without any."""
    import psutil
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "exp", "run", {}, {}, system_metrics=True)
    assert tracker._writer is not None and not tracker._writer.ready()  # still importing MLflow
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # the run's work: one core busy
        sum(i * i for i in range(1000))
    tracker.log_metrics({"x": 1.0}, 1)
    ready = tracker._writer.ready()
    assert tracker.close("FINISHED") is None
    assert _history(uri, tracker.run_id, "x") == [1]
    cpu = [m.value for m in sorted(MlflowClient(tracking_uri=uri).get_metric_history(
        tracker.run_id, "system/cpu_utilization_percentage"), key=lambda m: m.step)]
    # sampled here from the run's opening, the busy half second included (a sampler whose
    # window opened at the run's end read 0.0 on CI)
    cores = psutil.cpu_count() or 1
    assert cpu and (ready or cpu[0] >= 100.0 / cores / 4), cpu


def test_busy_percent_counts_what_is_not_idle():
    import psutil

    from rlx.tracking_writer import busy_percent

    zero = psutil.cpu_times()._replace(**{f: 0.0 for f in psutil.cpu_times()._fields})
    later = zero._replace(user=3.0, system=1.0, idle=5.0, iowait=1.0, guest=2.0)  # Linux's fields
    assert busy_percent(zero, later) == 40.0  # guest time is inside user time already
    assert busy_percent(later, later) == 0.0


def test_the_first_cpu_sample_covers_work_done_before_the_sampler_started(tmp_path):
    """A short run can be over before the sampler's thread starts; its first CPU sample
    still measures the window from the run's opening, not an idle half second after it."""
    import psutil
    from mlflow.tracking import MlflowClient

    from rlx.tracking_writer import cpu_mark, start_system_metrics, stop_system_metrics

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    mark = cpu_mark()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # the run's work: one core busy for a second
        sum(i * i for i in range(1000))
    monitor = start_system_metrics(uri, run_id, False, mark)
    assert monitor is not None
    time.sleep(1.0)  # idle, within the first sampling interval (10 s)
    stopping = time.monotonic()
    stop_system_metrics(monitor)  # ends the first sample's window early
    assert time.monotonic() - stopping < 5.0, "stopping waited out the sampling interval"
    first = client.get_metric_history(run_id, "system/cpu_utilization_percentage")[0].value
    cores = psutil.cpu_count() or 1
    assert first >= 100.0 / cores / 4, f"the first sample missed the busy second: {first}"


def test_an_mlflow_without_the_samplers_stop_event_keeps_its_own_first_sample():
    """The first-sample window reads two private attributes of MLflow's monitor; without
    them the CPU monitor is left as MLflow made it (its thread is not lost to an error)."""
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor

    from rlx.tracking_writer import _measure_first_cpu_sample, cpu_mark

    class Monitor:  # what a differently built MLflow monitor might look like
        def __init__(self):
            self.monitors = [CPUMonitor()]
            self.sampling_interval = 10

    monitor = Monitor()
    plain = monitor.monitors[0].collect_metrics
    _measure_first_cpu_sample(monitor, cpu_mark())
    assert monitor.monitors[0].collect_metrics == plain
    monitor.monitors[0].collect_metrics()  # MLflow's own sample, at once
    assert len(monitor.monitors[0]._metrics["cpu_utilization_percentage"]) == 1
