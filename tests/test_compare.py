"""rlx compare: runs read back from a real MLflow SQLite store, grouped and compared, with
the numbers checked by hand; and the ``rlx compare`` command's errors, each one line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from rlx.compare import CompareOptions, RunRef, compare, filter_refs, log_comparison, sweep_refs
from rlx.errors import UsageError

METRIC = "eval/accuracy"
# final values per cell and seed, and the value each logged at step 10 (step 0: 0.1 for all)
FINAL = {"dapo": [0.80, 0.90, 0.70, 0.85, 0.95], "grpo": [0.40, 0.50, 0.45, 0.55, 0.35],
         "rloo": [0.42, 0.48, 0.52, 0.38, 0.50]}
MID = {"dapo": [0.90, 0.50, 0.60, 0.70, 0.80], "grpo": [0.20, 0.30, 0.25, 0.35, 0.15],
       "rloo": [0.20, 0.30, 0.25, 0.35, 0.15]}


def iqm_by_hand(values: list[float]) -> float:
    """The middle of the sorted values: int(n / 4) cut at each end."""
    v, cut = sorted(values), len(values) // 4
    return float(np.mean(v[cut:len(v) - cut]))


class Store:
    """A private MLflow SQLite store with helpers to log runs as rlx and rlx sweep do."""

    def __init__(self, root: Path):
        from mlflow.tracking import MlflowClient

        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.client = MlflowClient(tracking_uri=self.uri)

    def experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(name, artifact_location=str(self.root / "artifacts" / name))

    def parent(self, experiment: str = "sweeps") -> str:
        run = self.client.create_run(self.experiment(experiment), run_name="sweep",
                                     tags={"rlx.sweep_role": "parent", "rlx.status": "RUNNING"})
        return run.info.run_id

    def run(self, experiment: str, history: dict[str, list[tuple[int, float]]], *, seed: int, cell: dict | None = None,
            parent: str | None = None, env: str = "arithmetic", status: str = "FINISHED", rlx_id: str = "",
            params: dict | None = None, headline: str = f"{METRIC},train/loss", label: str = "") -> str:
        from mlflow.entities import Metric, Param

        tags = {"rlx.seed": str(seed), "rlx.env": env, "rlx.headline": headline, "rlx.status": status,
                "rlx.run_id": rlx_id or f"r{seed}{abs(hash(json.dumps(cell, sort_keys=True))) % 10**6:06d}"}
        if parent is not None:
            cell = cell or {}
            tags.update({"mlflow.parentRunId": parent, "rlx.cell_values": json.dumps(cell, sort_keys=True),
                         "rlx.cell": label or " ".join(f"{k}={v}" for k, v in cell.items()) or "base"})
        run_id = self.client.create_run(self.experiment(experiment), tags=tags).info.run_id
        metrics = [Metric(k, v, 1000 + s, s) for k, points in history.items() for s, v in points]
        ps = [Param(k, str(v)) for k, v in (params or {}).items()]
        self.client.log_batch(run_id, metrics=metrics, params=ps, synchronous=True)
        self.client.set_terminated(run_id, {"CRASHED": "FAILED"}.get(status, status))
        return run_id


@pytest.fixture
def store(tmp_path) -> Store:
    from _store_template import use

    use()  # the schema copied, not migrated afresh, for each test's store (a few seconds each)
    return Store(tmp_path)


def _sweep(store: Store, cells=("dapo", "grpo", "rloo"), extras: bool = True) -> str:
    """A sweep of objective.loss_type over 5 seeds, plus (``extras``) a FAILED run, a run
    without the metric, and a run of another sweep."""
    parent = store.parent()
    for cell in cells:
        for seed in range(5):
            store.run("sweeps", {METRIC: [(0, 0.1), (10, MID[cell][seed]), (20, FINAL[cell][seed])]}, seed=seed,
                      cell={"objective.loss_type": cell}, parent=parent, rlx_id=f"{cell}{seed}")
    if extras:
        store.run("sweeps", {METRIC: [(0, 0.99)]}, seed=5, cell={"objective.loss_type": "dapo"}, parent=parent,
                  status="FAILED", rlx_id="dapo5")
        store.run("sweeps", {"train/loss": [(0, 1.0)]}, seed=5, cell={"objective.loss_type": "grpo"}, parent=parent,
                  rlx_id="grpo5")
        store.run("sweeps", {METRIC: [(0, 0.0)]}, seed=0, cell={"objective.loss_type": "dapo"}, parent=store.parent(),
                  rlx_id="other0")
    return parent


def _group(comparison, label):
    return next(g for g in comparison.groups if g.label == label)


# -- reading a sweep ------------------------------------------------------------------------

def test_sweep_refs_read_groups_seeds_and_tasks(store):
    parent = _sweep(store)
    refs = sweep_refs(store.uri, parent)
    assert len(refs) == 17  # 15 + FAILED + no metric; not the other sweep's run
    groups = {r.group for r in refs}
    assert groups == {"objective.loss_type=dapo", "objective.loss_type=grpo", "objective.loss_type=rloo"}
    dapo = [r for r in refs if r.group == "objective.loss_type=dapo"]
    assert sorted(r.seed for r in dapo) == [0, 1, 2, 3, 4, 5]
    assert {r.task for r in refs} == {"arithmetic"}
    assert {r.status for r in dapo} == {"FINISHED", "FAILED"}
    assert dapo[0].values == {"objective.loss_type": "dapo"}
    only = sweep_refs(store.uri, parent, ["dapo0", "grpo3"])
    assert sorted((r.group, r.seed) for r in only) == [("objective.loss_type=dapo", 0), ("objective.loss_type=grpo", 3)]


def test_environment_settings_of_a_cell_make_tasks_not_groups(store):
    parent = store.parent()
    for cell in ({"objective.beta": 0.0, "env.difficulty": 1}, {"objective.beta": 0.0, "env.difficulty": 2}):
        store.run("sweeps", {METRIC: [(0, 0.5)]}, seed=0, cell=cell, parent=parent)
    refs = sweep_refs(store.uri, parent)
    assert {r.group for r in refs} == {"objective.beta=0.0"}
    assert {r.task for r in refs} == {"arithmetic[env.difficulty=1]", "arithmetic[env.difficulty=2]"}
    assert all(r.values == {"objective.beta": 0.0} for r in refs)
    # a listed cell's own label keeps its name, without the environment axis after it
    other = store.parent()
    for difficulty in (1, 2):
        store.run("sweeps", {METRIC: [(0, 0.5)]}, seed=0, cell={"reward": "ensemble", "env.difficulty": difficulty},
                  parent=other, label=f"ensemble-min env.difficulty={difficulty}")
    assert {r.group for r in sweep_refs(store.uri, other)} == {"ensemble-min"}


# -- the numbers -----------------------------------------------------------------------------

def test_final_aggregate_iqm_pairs_and_verdicts(store):
    parent = _sweep(store)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions())
    assert c.metric == METRIC  # the first headline metric
    assert [g.label for g in c.groups] == ["objective.loss_type=dapo", "objective.loss_type=rloo",
                                           "objective.loss_type=grpo"]
    for cell in FINAL:
        g = _group(c, f"objective.loss_type={cell}")
        assert g.n_runs == 5 and g.seeds == [0, 1, 2, 3, 4]
        assert g.iqm == pytest.approx(iqm_by_hand(FINAL[cell]))
        assert g.mean == pytest.approx(np.mean(FINAL[cell]))
        assert g.median == pytest.approx(np.median(FINAL[cell]))
        assert g.iqm_ci[0] <= g.iqm <= g.iqm_ci[1] and g.iqm_ci[0] < g.iqm_ci[1]
    assert _group(c, "objective.loss_type=dapo").iqm == pytest.approx(0.85)
    pairs = {(p.a, p.b): p for p in c.pairs}
    win = pairs[("objective.loss_type=dapo", "objective.loss_type=grpo")]
    assert win.probability == 1.0 and win.ci == (1.0, 1.0)
    assert win.verdict == "objective.loss_type=dapo better than objective.loss_type=grpo" and win.better == "a"
    tie = pairs[("objective.loss_type=rloo", "objective.loss_type=grpo")]
    # of the 25 (rloo run, grpo run) pairs rloo wins 13 and ties 1 (0.50 and 0.50): 13.5 / 25
    assert tie.probability == pytest.approx(13.5 / 25)
    assert tie.ci[0] < 0.5 < tie.ci[1]
    assert tie.verdict == "not distinguishable at 5 seeds" and tie.better == "tie"
    reasons = {e.run_id: e.reason for e in c.excluded}
    assert set(reasons) == {"dapo5", "grpo5"}
    assert "FAILED" in reasons["dapo5"] and METRIC in reasons["grpo5"]


def test_best_and_last_k_aggregates(store):
    parent = _sweep(store, cells=("dapo",), extras=False)
    refs = sweep_refs(store.uri, parent)
    best = compare(store.uri, refs, CompareOptions(aggregate="best")).groups[0]
    by_hand = [max(0.1, m, f) for m, f in zip(MID["dapo"], FINAL["dapo"])]
    assert sorted(s["score"] for s in best.scores) == pytest.approx(sorted(by_hand))
    assert best.iqm == pytest.approx(iqm_by_hand(by_hand))  # (0.85 + 0.9 + 0.9) / 3
    last = compare(store.uri, refs, CompareOptions(aggregate="last", last_k=2)).groups[0]
    by_hand = [(m + f) / 2 for m, f in zip(MID["dapo"], FINAL["dapo"])]
    assert last.iqm == pytest.approx(iqm_by_hand(by_hand))
    assert last.iqm == pytest.approx(0.775)
    everything = compare(store.uri, refs, CompareOptions(aggregate="last", last_k=10)).groups[0]
    assert everything.mean == pytest.approx(np.mean([(0.1 + m + f) / 3 for m, f in zip(MID["dapo"], FINAL["dapo"])]))


def test_lower_is_better_ranks_and_takes_the_minimum(store):
    parent = store.parent()
    losses = {"a": [3.0, 2.0, 4.0], "b": [1.0, 0.5, 1.5]}
    for cell, finals in losses.items():
        for seed, f in enumerate(finals):
            store.run("sweeps", {"loss": [(0, f - 0.25), (1, f)]}, seed=seed, cell={"x": cell}, parent=parent)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions(metric="loss", aggregate="best",
                                                                        lower_is_better=True))
    assert [g.label for g in c.groups] == ["x=b", "x=a"]  # smaller is better: b first
    assert _group(c, "x=b").mean == pytest.approx(np.mean(losses["b"]) - 0.25)  # best = min
    (pair,) = c.pairs
    assert (pair.a, pair.probability, pair.verdict) == ("x=b", 1.0, "x=b better than x=a")


def test_learning_curves_are_the_iqm_at_each_step(store):
    parent = _sweep(store, cells=("dapo", "grpo"), extras=False)
    # one more dapo run that ended at step 10: it counts up to there, not after
    store.run("sweeps", {METRIC: [(0, 0.1), (10, 0.0)]}, seed=7, cell={"objective.loss_type": "dapo"}, parent=parent)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions())
    curve = next(cv for cv in c.curves if cv.group == "objective.loss_type=dapo")
    assert curve.steps == [0, 10, 20]
    assert curve.n == [6, 6, 5]
    assert curve.iqm[0] == pytest.approx(0.1) and curve.low[0] == curve.high[0] == pytest.approx(0.1)
    assert curve.iqm[1] == pytest.approx(iqm_by_hand(MID["dapo"] + [0.0]))
    assert curve.iqm[2] == pytest.approx(iqm_by_hand(FINAL["dapo"]))
    assert curve.low[2] < curve.iqm[2] < curve.high[2]
    grpo = next(cv for cv in c.curves if cv.group == "objective.loss_type=grpo")
    assert grpo.iqm[1] == pytest.approx(iqm_by_hand(MID["grpo"]))
    # its final score is its step-20 value: a 6th dapo run scored 0.0 by final
    assert _group(c, "objective.loss_type=dapo").n_runs == 6


def test_several_tasks_are_normalized_per_task(store):
    parent = store.parent()
    scores = {("a", 1): [0.2, 0.4, 0.6], ("b", 1): [0.0, 0.1, 0.2], ("a", 2): [50.0, 70.0, 90.0],
              ("b", 2): [10.0, 30.0, 60.0]}
    for (cell, difficulty), values in scores.items():
        for seed, v in enumerate(values):
            store.run("sweeps", {METRIC: [(0, v)]}, seed=seed, cell={"x": cell, "env.difficulty": difficulty},
                      parent=parent)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions())
    assert c.normalized and c.tasks == ["arithmetic[env.difficulty=1]", "arithmetic[env.difficulty=2]"]
    assert any("normalized per task" in n for n in c.notes)
    assert "note: 2 tasks: scores normalized per task" in _rendered(c)
    # task 1 spans 0.0..0.6, task 2 10..90
    a = [v / 0.6 for v in scores[("a", 1)]] + [(v - 10) / 80 for v in scores[("a", 2)]]
    b = [v / 0.6 for v in scores[("b", 1)]] + [(v - 10) / 80 for v in scores[("b", 2)]]
    assert _group(c, "x=a").iqm == pytest.approx(iqm_by_hand(a))
    assert _group(c, "x=b").mean == pytest.approx(np.mean(b))
    assert _group(c, "x=a").n_runs == 3
    assert c.pairs[0].a == "x=a"
    # P(A > B): per task the share of (a run, b run) pairs a wins, a tie counting 1/2; averaged over tasks
    t1 = np.mean([(x > y) + 0.5 * (x == y) for x in scores[("a", 1)] for y in scores[("b", 1)]])
    t2 = np.mean([(x > y) + 0.5 * (x == y) for x in scores[("a", 2)] for y in scores[("b", 2)]])
    assert c.pairs[0].probability == pytest.approx((t1 + t2) / 2)


def test_a_group_missing_a_run_on_one_task_keeps_a_full_matrix(store):
    parent = store.parent()
    for difficulty, seeds in ((1, [0, 1, 2]), (2, [0, 2])):
        for seed in seeds:
            store.run("sweeps", {METRIC: [(0, 0.5 + seed / 10)]}, seed=seed, cell={"env.difficulty": difficulty},
                      parent=parent)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions())
    (g,) = c.groups
    assert g.label == "base" and g.n_runs == 2 and g.seeds == [0, 2]
    (dropped,) = c.excluded
    assert dropped.seed == 1 and "each task keeps 2" in dropped.reason


def test_one_group_and_single_run_groups(store):
    parent = store.parent()
    store.run("sweeps", {METRIC: [(0, 0.5)]}, seed=0, cell={"x": "solo"}, parent=parent)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions())
    (g,) = c.groups
    assert g.n_runs == 1 and not g.has_ci and np.isnan(g.iqm_ci[0])
    assert c.pairs == []
    text = _rendered(c)
    assert "n/a: 1 run" in text and "pairs: a comparison needs two groups" in text
    store.run("sweeps", {METRIC: [(0, 0.9)]}, seed=0, cell={"x": "other"}, parent=parent)
    (pair,) = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions()).pairs
    assert pair.verdict == "not distinguishable at 1 seed"


def _rendered(c) -> str:
    from rich.console import Console

    out = io.StringIO()
    c.render(Console(file=out, width=200))
    return out.getvalue()


def test_json_csv_and_rendering(store):
    parent = _sweep(store)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions(reps=500))
    data = json.loads(c.to_json())
    assert data["metric"] == METRIC and data["aggregate"] == "final" and data["reps"] == 500
    assert [g["label"] for g in data["groups"]][0] == "objective.loss_type=dapo"
    assert data["groups"][0]["iqm"] == pytest.approx(0.85)
    assert len(data["pairs"]) == 3 and {"a", "b", "probability", "ci", "verdict"} <= set(data["pairs"][0])
    assert len(data["curves"]) == 3 and data["curves"][0]["steps"] == [0, 10, 20]
    assert len(data["profiles"]) == 3 and len(data["excluded"]) == 2
    rows = list(csv.DictReader(io.StringIO(c.to_csv())))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["iqm"]) == pytest.approx(0.85) and rows[0]["seeds"] == "0 1 2 3 4"
    assert json.loads(rows[0]["values"]) == {"objective.loss_type": "dapo"}
    pair_rows = list(csv.DictReader(io.StringIO(c.to_csv("pairs"))))
    assert pair_rows[0]["verdict"].endswith("better than objective.loss_type=rloo")
    text = _rendered(c)
    assert text.index("objective.loss_type=dapo") < text.index("objective.loss_type=grpo")
    assert "not distinguishable at 5 seeds" in text and "excluded: run dapo5" in text


def test_json_has_null_for_undefined_intervals(store):
    parent = store.parent()
    store.run("sweeps", {METRIC: [(0, 0.5)]}, seed=0, cell={"x": "solo"}, parent=parent)
    data = json.loads(compare(store.uri, sweep_refs(store.uri, parent), CompareOptions()).to_json())
    assert data["groups"][0]["iqm_ci"] == [None, None]


def test_log_comparison_puts_tables_and_plots_on_the_parent(store):
    parent = _sweep(store)
    c = compare(store.uri, sweep_refs(store.uri, parent), CompareOptions(reps=300))
    log_comparison(store.uri, parent, c)
    log_comparison(store.uri, parent, c)  # again: replaced, not appended
    listed = {a.path for a in store.client.list_artifacts(parent, "compare")}
    assert listed == {f"compare/{n}" for n in ("summary.json", "pairs.json", "comparison.json", "summary.csv",
                                              "intervals.png", "curves.png", "profiles.png", "improvement.png")}
    folder = Path(store.client.download_artifacts(parent, "compare", str(store.root / "down")))
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["data"]) == 3 and "iqm" in summary["columns"]  # MLflow's table format, 3 rows
    assert len(json.loads((folder / "pairs.json").read_text())["data"]) == 3
    assert json.loads((folder / "comparison.json").read_text())["metric"] == METRIC
    for png in folder.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    tables = json.loads(store.client.get_run(parent).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "compare/summary.json", "type": "table"} in tables
    from rlx.errors import RlxError

    with pytest.raises(RlxError, match="could not log the comparison to MLflow run 0123abcd.*--no-log") as gone:
        log_comparison(store.uri, "0123abcd", c)
    assert "\n" not in str(gone.value)


# -- any runs, by filter -----------------------------------------------------------------------

def _plain(store: Store) -> None:
    """Runs of one experiment differing in objective.beta (and in settings that are not)."""
    for beta, finals in ((0.0, [0.3, 0.4, 0.5]), (0.04, [0.6, 0.7, 0.8])):
        for seed, f in enumerate(finals):
            store.run("plain", {METRIC: [(0, f)]}, seed=seed, params={
                "objective.name": "grpo", "objective.beta": beta, "env.name": "arithmetic", "run.seed": seed,
                "run.name": f"b{beta}-{seed}", "run.threads": seed, "run.steps": 20})
    store.parent("plain")  # a sweep's parent: skipped


def test_filter_refs_groups_by_the_params_that_differ(store):
    _plain(store)
    refs = filter_refs(store.uri, "plain")
    assert {r.group for r in refs} == {"objective.beta=0.0", "objective.beta=0.04"}
    assert {r.task for r in refs} == {"arithmetic"} and len(refs) == 6
    c = compare(store.uri, refs, CompareOptions())
    assert c.groups[0].label == "objective.beta=0.04" and c.groups[0].iqm == pytest.approx(0.7)
    assert c.pairs[0].verdict == "objective.beta=0.04 better than objective.beta=0.0"
    only = filter_refs(store.uri, "plain", "params.objective.beta = '0.04'")
    assert {r.group for r in only} == {"all runs"} and len(only) == 3


def test_filter_refs_errors(store):
    _plain(store)
    with pytest.raises(UsageError, match="no MLflow experiment 'plan'.*did you mean 'plain'"):
        filter_refs(store.uri, "plan")
    with pytest.raises(UsageError, match="MLflow rejected the filter") as bad:
        filter_refs(store.uri, "plain", "params.beta ~~ 3")
    assert "\n" not in str(bad.value)
    with pytest.raises(UsageError, match="no runs in experiment 'plain' match"):
        filter_refs(store.uri, "plain", "params.`objective.beta` = '9'")
    with pytest.raises(UsageError, match="no MLflow store at"):
        filter_refs(f"sqlite:///{store.root}/missing/mlflow.db", "plain")
    assert not (store.root / "missing").exists()


def test_compare_errors(store):
    _plain(store)
    refs = filter_refs(store.uri, "plain")
    with pytest.raises(UsageError, match="none of the 6 finished runs logged metric 'nope'; they log: eval/accuracy"):
        compare(store.uri, refs, CompareOptions(metric="nope"))
    with pytest.raises(UsageError, match="--aggregate 'mean' is not one of final, best, last"):
        compare(store.uri, refs, CompareOptions(aggregate="mean"))
    with pytest.raises(UsageError, match="no runs to compare"):
        compare(store.uri, [], CompareOptions())
    failed = [RunRef(r.mlflow_run_id, r.group, r.seed, r.task, "FAILED") for r in refs]
    with pytest.raises(UsageError, match="none of the 6 runs FINISHED \\(6 FAILED\\)"):
        compare(store.uri, failed, CompareOptions())
    apart = [RunRef(r.mlflow_run_id, r.group, r.seed, f"env-{r.group}") for r in refs]
    with pytest.raises(UsageError, match="the groups share no task"):
        compare(store.uri, apart, CompareOptions())


# -- the command ---------------------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``rlx compare ...`` through rlx's own entry point (error printing and exit codes
    included), with the command registered here until cli/main.py registers it."""
    from rlx.cli import compare_cmd, main

    for var in ("MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RLX_HOME", str(tmp_path / "home"))
    added = "compare" not in {c.name for c in main.app.registered_commands}
    if added:
        main.app.command("compare")(compare_cmd.compare)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main._main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    if added:
        main.app.registered_commands.pop()


def _catalog_sweep(home: Path, uri: str, parent: str, plan: list[dict], spec: dict | None = None,
                   sweep_id: str = "abcdef123456") -> None:
    from rlx.registry.catalog import Catalog, SweepRecord

    home.mkdir(parents=True, exist_ok=True)
    Catalog(f"sqlite:///{home}/catalog.db").add_sweep(SweepRecord(
        id=sweep_id, name="t", status="FINISHED", experiment="sweeps", tracking_uri=uri, mlflow_run_id=parent,
        plan_json=json.dumps(plan), spec_json=json.dumps(spec or {})))


def _plan(cells=("dapo", "grpo", "rloo")) -> list[dict]:
    return [{"run_id": f"{c}{s}", "cell": f"objective.loss_type={c}", "values": {"objective.loss_type": c}, "seed": s}
            for c in cells for s in range(5)]


def _files(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_cli_compares_a_sweep_and_logs_to_its_parent(cli, store, tmp_path):
    parent = _sweep(store)
    _catalog_sweep(tmp_path / "home", store.uri, parent, _plan() + [{"run_id": "late0", "cell": "x", "seed": 0}])
    code, out, err = cli("compare", "abcdef", "--reps", "300")
    assert code == 0, err
    assert out.index("objective.loss_type=dapo") < out.index("objective.loss_type=grpo")
    assert "dapo better than objective.loss_type=grpo" in out and "not distinguishable at 5 seeds" in out
    assert "excluded: run late0" in out and "has not started" in out
    assert f"logged to the sweep's parent MLflow run {parent}" in err
    assert "compare/summary.json" in {a.path for a in store.client.list_artifacts(parent, "compare")}


def test_cli_json_csv_and_no_log(cli, store, tmp_path):
    parent = _sweep(store)
    _catalog_sweep(tmp_path / "home", store.uri, parent, _plan(), spec={"metric": METRIC, "aggregate": "best"})
    code, out, err = cli("compare", "abcdef123456", "--json", "--no-log", "--reps", "200")
    assert code == 0, err
    data = json.loads(out)
    assert data["aggregate"] == "best"  # the sweep's choice
    assert data["groups"][0]["iqm"] == pytest.approx(iqm_by_hand([max(m, f) for m, f in zip(MID["dapo"],
                                                                                          FINAL["dapo"])]))
    assert store.client.list_artifacts(parent, "compare") == []
    code, out, err = cli("compare", "abcdef", "--csv", "-", "--aggregate", "final", "--no-log", "--reps", "200")
    assert code == 0, err
    assert out.splitlines()[0].startswith("rank,group,values,runs,seeds,iqm")
    assert len(out.splitlines()) == 4
    target = tmp_path / "out.csv"
    code, out, err = cli("compare", "abcdef", "--csv", str(target), "--no-log", "--reps", "200")
    assert code == 0 and target.read_text().startswith("rank,group") and "wrote" in err


def test_cli_experiment_mode_prints_only(cli, store):
    _plain(store)
    before = _files(store.root)
    code, out, err = cli("compare", "--experiment", "plain", "--tracking-uri", store.uri, "--reps", "200")
    assert code == 0, err
    assert "objective.beta=0.04 better than objective.beta=0.0" in out and "logged" not in err
    code, out, err = cli("compare", "--experiment", "plain", "--tracking-uri", store.uri,
                         "--filter", "params.`objective.beta` = '0.04'", "--reps", "200")
    assert code == 0, err
    assert "pairs: a comparison needs two groups" in out
    assert _files(store.root) == before


BAD = [
    (["abcdef", "--experiment", "plain"], "give a sweep id or --experiment, not both"),
    ([], "nothing to compare: give a sweep id"),
    (["fedcba"], "no sweep 'fedcba' in the catalog"),
    (["zzz"], "sweep ids are 12 hex digits"),
    (["123456"], "ran with tracking off"),
    (["--experiment", "plian"], "did you mean 'plain'"),
    (["--experiment", "plain", "--filter", "params.x ~~ 1"], "MLflow rejected the filter"),
    (["--experiment", "plain", "--filter", "params.`objective.beta` = '7'"], "no runs in experiment 'plain' match"),
    (["--experiment", "plain", "--metric", "eval/nope"], "logged metric 'eval/nope'; they log: eval/accuracy"),
    (["abcdef", "--aggregate", "mean"], "--aggregate 'mean' is not one of final, best, last"),
    (["abcdef", "--last-k", "0"], "--last-k 0 must be at least 1"),
    (["abcdef", "--reps", "50"], "use at least 100"),
    (["abcdef", "--confidence", "1.5"], "--confidence 1.5 must be a fraction between 0 and 1"),
    (["abcdef", "--confidence", "0"], "--confidence 0.0 must be a fraction"),
    (["abcdef", "--filter", "params.a = '1'"], "--filter selects runs of an --experiment"),
    (["abcdef", "--json", "--csv", "-"], "--json and --csv - both write to stdout"),
    (["abcdef", "--csv", "/nonexistent-folder/x.csv"], "folder /nonexistent-folder does not exist"),
    (["abcdef", "--reps", "many"], "Invalid value for '--reps'"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m[:30] for _, m in BAD])
def test_cli_bad_requests_are_one_line_and_write_nothing(cli, store, tmp_path, args, message):
    _plain(store)
    parent = _sweep(store, cells=("dapo",), extras=False)
    home = tmp_path / "home"
    _catalog_sweep(home, store.uri, parent, _plan(("dapo",)))
    _catalog_sweep(home, "", "", [], sweep_id="123456abcdef")  # tracking was off
    before = _files(tmp_path)
    extra = ["--tracking-uri", store.uri] if "--experiment" in args else []
    code, out, err = cli("compare", *args, *extra)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert out == ""
    assert _files(tmp_path) == before
    assert not list(tmp_path.glob("*.csv"))


def test_cli_without_catalog_or_store_creates_neither(cli, tmp_path):
    code, _, err = cli("compare", "abcdef")
    assert code == 2 and "no sweep 'abcdef': there is no catalog" in err
    code, _, err = cli("compare", "--experiment", "x")
    assert code == 2 and "no MLflow store at" in err
    assert not (tmp_path / "home").exists()
