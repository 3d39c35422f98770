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
