"""tests/_browser.py against MLflow 3.17's real web UI, on a synthetic store.

The store is what an rlx sweep leaves, made with MLflow's own API (no rlx code): an
experiment "rlx/arithmetic" whose artifacts live under the test's folder, three seeds of
one group (tag ``rlx.group``) and a run of another, params, metrics with a history, a
description (``mlflow.note.content``), a training dataset, system metrics from MLflow's
``SystemMetricsMonitor``, and a logged model registered as version 1. The test then
reads every page through the driver and checks what it reads; a failed read leaves a
screenshot whose path the failure names.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _browser import launch, serve_mlflow, shared_view_tag, ui, unavailable

GROUP, OTHER = "abc123", "zzz999"
SEEDS = [f"grpo-prm-arithmetic-s{i}" for i in range(3)]
LONE = "ppo-arithmetic-s0"
NOTE = "**KILLED** at step 3 by SIGINT; resume with `rlx resume`"
MODEL = "rlx-test-policy"
CPU = "system/cpu_utilization_percentage"


@dataclass
class Store:
    uri: str
    experiment_id: str
    run_ids: dict[str, str]  # run name -> id
    model_id: str


def _build_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("rlx/arithmetic", artifact_location=(root / "artifacts").as_uri())
    runs: dict[str, str] = {}
    for i, (name, group) in enumerate([(s, GROUP) for s in SEEDS] + [(LONE, OTHER)]):
        run = client.create_run(exp_id, run_name=name, tags={"rlx.group": group, "rlx.objective": name.rsplit("-", 1)[0]})
        rid = runs[name] = run.info.run_id
        client.log_param(rid, "run.seed", str(i))
        for step in range(5):  # a history: a line, not a point, in the charts
            client.log_metric(rid, "reward/mean", 0.1 * step + 0.01 * i, step=step)
        client.log_metric(rid, "loss", 1.0 / (i + 1), step=0)

    first = runs[SEEDS[0]]
    client.set_tag(first, "mlflow.note.content", NOTE)
    train = Dataset(name="arithmetic-train", digest="d1g3st", source_type="local", source="file:///data/train.jsonl")
    client.log_inputs(first, datasets=[DatasetInput(train, tags=[InputTag("mlflow.data.context", "training")])])

    # MLflow's own sampler, as `mlflow.start_run(log_system_metrics=True)` runs it
    monitor = SystemMetricsMonitor(first, sampling_interval=0.5, samples_before_logging=1, tracking_uri=uri)
    monitor.start()
    try:
        deadline = time.monotonic() + 60
        while len(client.get_metric_history(first, CPU)) < 2 and time.monotonic() < deadline:
            time.sleep(0.25)
    finally:
        monitor.finish()
    assert len(client.get_metric_history(first, CPU)) >= 2, "SystemMetricsMonitor logged no CPU samples"

    for rid in runs.values():
        if client.get_run(rid).info.status == "RUNNING":
            client.set_terminated(rid)

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str], params=None) -> list[str]:
            return model_input

    # set_tracking_uri also writes MLFLOW_TRACKING_URI, which monkeypatch restores
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(uri)
    try:
        lm = mlflow.initialize_logged_model(name="policy", source_run_id=first, experiment_id=exp_id)
        # pyfunc.log_model has no run_id: the active run is the one its model is an output of
        with mlflow.start_run(run_id=first):
            mlflow.pyfunc.log_model(name="policy", python_model=Echo(), model_id=lm.model_id, pip_requirements=["mlflow"])
        mlflow.register_model(f"models:/{lm.model_id}", MODEL)
    finally:
        mlflow.set_tracking_uri(previous)
    return Store(uri, exp_id, runs, lm.model_id)


def _group_gone(pgid: int) -> bool:
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return False
        except (ProcessLookupError, psutil.Error):
            continue
    return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_browser_reads_every_page_of_a_synthetic_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    store = _build_store(tmp_path / "store", monkeypatch)
    timings["store"] = time.perf_counter() - t
    exp, first = store.experiment_id, store.run_ids[SEEDS[0]]
    everyone = sorted(SEEDS + [LONE])

    t = time.perf_counter()
    with serve_mlflow(store.uri, workdir=tmp_path / "server") as server:
        timings["server start"] = time.perf_counter() - t
        with launch() as browser, ui(browser, server.url, tmp_path / "shots") as page:
            t = time.perf_counter()
            # runs table, MLflow's default columns: params, metrics and tags are not among them
            assert page.open_runs(exp) == 4
            page.run_names(until=lambda names: sorted(names) == everyone)
            assert page.show_column("param", "run.seed") is True
            assert page.show_column("param", "run.seed") is False  # already shown: left as it is
            page.column_values("param", "run.seed", until=lambda v: v == {n: str(i) for i, n in enumerate(SEEDS + [LONE])})
            page.show_column("metric", "reward/mean")
            page.column_values("metric", "reward/mean", until=lambda v: v[SEEDS[0]] == "0.4")
            page.show_column("tag", "rlx.group")
            page.column_values("tag", "rlx.group", until=lambda v: v == {**{s: GROUP for s in SEEDS}, LONE: OTHER})

            # grouped by the rlx.group tag: one row per group with its count, its runs under it
            page.group_by_tag("rlx.group")
            groups = page.groups(until=lambda gs: {g.name: g.count for g in gs} == {GROUP: 3, OTHER: 1})
            assert {g.name: sorted(g.runs) for g in groups} == {GROUP: sorted(SEEDS), OTHER: [LONE]}
            # the grouping is kept (localStorage) into the chart view: one line per group
            page.open_runs(exp, chart=True)
            page.groups(until=lambda gs: {g.name for g in gs} == {GROUP, OTHER})
            page.chart("reward/mean", until=lambda c: c.plotted and sorted(c.legend) == sorted([GROUP, OTHER]))
            timings["runs table"] = time.perf_counter() - t

            # a run's page: description as markdown, dataset, logged and registered model
            t = time.perf_counter()
            ov = page.run_overview(exp, first)
            assert ov.name == SEEDS[0]
            assert ov.description_text.startswith("KILLED at step 3 by SIGINT"), ov
            assert "<strong>KILLED</strong>" in ov.description_html and "<code>rlx resume</code>" in ov.description_html, ov
            assert ov.datasets == [("arithmetic-train (d1g3st)", "training")], ov
            assert ov.tags["rlx.group"] == GROUP, ov
            assert ov.registered_models == [(MODEL, "v1")], ov
            assert [(m["name"], m["status"], m["registered"]) for m in ov.logged_models] == \
                [("policy", "Ready", f"{MODEL} v1")], ov
            assert page.run_overview(exp, store.run_ids[LONE]).description_text == ""

            titles = page.system_metric_charts(exp, first, until=lambda ts: CPU in ts)
            assert all(t.startswith("system/") for t in titles), titles
            page.chart(CPU, until=lambda c: c.plotted and c.legend == [SEEDS[0]])

            assert page.model_versions(MODEL) == ["1"]
            timings["run and registry pages"] = time.perf_counter() - t

        # a URL that opens the table grouped, with chosen columns: a shared view (an experiment
        # tag), in a fresh browser context so that nothing comes from localStorage
        from mlflow import MlflowClient

        key, value = shared_view_tag("rlx-groups", name="rlx: by group", group_by_tag="rlx.group",
                                     columns=(("param", "run.seed"), ("metric", "reward/mean")))
        MlflowClient(store.uri).set_experiment_tag(exp, key, value)
        with launch() as browser, ui(browser, server.url, tmp_path / "shots") as page:
            t = time.perf_counter()
            page.open_runs(exp, view_key="rlx-groups")
            page.groups(until=lambda gs: {g.name: g.count for g in gs} == {GROUP: 3, OTHER: 1})
            page.column_values("param", "run.seed", until=lambda v: v.get(LONE) == "3")
            timings["shared view"] = time.perf_counter() - t
        pgid, port = server.proc.pid, server.port

    # serve_mlflow took the whole server with it
    deadline = time.monotonic() + 30
    while not (_group_gone(pgid) and _port_free(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group_gone(pgid), f"processes of the server's group {pgid} outlived serve_mlflow"
    assert _port_free(port), f"port {port} still bound after serve_mlflow"
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
