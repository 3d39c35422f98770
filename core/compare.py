"""``rlx compare``: runs read back from MLflow, grouped, and aggregated with the statistics of
``rlx.stats`` (interquartile mean with stratified-bootstrap confidence intervals, probability
of improvement between groups, performance profiles), so that a sweep's answer says how
sure it is.

The runs come as ``RunRef``s, from a sweep's parent run (``sweep_refs``) or from any MLflow
search (``filter_refs``); ``compare`` reads each run's history of one metric, reduces it to
one score per run (``final``, ``best`` or the mean of the ``last`` k values) and arranges
the scores per group as a ``(runs, tasks)`` matrix. Over several tasks the scores are
min-max normalized per task first, so that one task's scale does not decide the ranking.
``log_comparison`` puts the result on the sweep's parent run as tables and plots the
MLflow UI shows.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rlx.errors import UsageError
from rlx.jsonable import finite
from rlx.run_naming import NOT_SETTINGS

AGGREGATES = ("final", "best", "last")
_MAX_POINTS = 200  # points of a learning curve (steps beyond are thinned evenly)
_TAUS = 51  # thresholds of a performance profile
_ALL = "all runs"  # the label of the one group when nothing differs between the runs


@dataclass
class RunRef:
    mlflow_run_id: str
    group: str  # label of the group (the cell without the task part)
    seed: int
    task: str  # environment name (e.g. "arithmetic", "CartPole-v1"); one task is the common case
    status: str = "FINISHED"
    values: dict = field(default_factory=dict)  # the group's settings, e.g. {"objective.loss_type": "dapo"}


@dataclass
class CompareOptions:
    metric: str | None = None  # default: the first name in the runs' `rlx.headline` tag
    aggregate: str = "final"  # "final" (last logged value), "best" (max; min with lower_is_better), "last" (mean of last k)
    last_k: int = 3
    lower_is_better: bool = False
    reps: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def check(self) -> None:
        """A UsageError naming the option and its allowed values, for the first bad one."""
        if self.aggregate not in AGGREGATES:
            raise UsageError(f"--aggregate '{self.aggregate}' is not one of {', '.join(AGGREGATES)}: final is the last "
                             "logged value, best the max (min with --lower-is-better), last the mean of the last k")
        if self.last_k < 1:
            raise UsageError(f"--last-k {self.last_k} must be at least 1 (the number of last logged values averaged)")
        if self.reps < 100:
            raise UsageError(f"--reps {self.reps} is too few bootstrap resamples for a confidence interval; "
                             "use at least 100 (2000 is the default)")
        if not (isinstance(self.confidence, (int, float)) and 0 < self.confidence < 1):
            raise UsageError(f"--confidence {self.confidence} must be a fraction between 0 and 1, e.g. 0.95")
        if self.metric is not None and not self.metric.strip():
            raise UsageError("--metric is empty; name a metric the runs log, e.g. --metric eval/accuracy")


@dataclass
class GroupStats:
    """One group's runs and their aggregate statistics (NaN where undefined: CIs of a
    single run). ``n_runs`` is per task; ``scores`` lists each kept run's score."""

    label: str
    values: dict
    n_runs: int
    seeds: list[int]
    mean: float
    median: float
    iqm: float
    std: float
    iqm_ci: tuple[float, float]
    mean_ci: tuple[float, float]
    median_ci: tuple[float, float]
    rank: int = 0
    scores: list[dict] = field(default_factory=list)  # {run_id, mlflow_run_id, seed, task, score}

    @property
    def has_ci(self) -> bool:
        return self.n_runs >= 2


@dataclass
class PairStats:
    """P(A > B) for two groups (A ranked above B): A's runs beating B's, ties half."""

    a: str
    b: str
    probability: float
    ci: tuple[float, float]
    n_seeds: int
    verdict: str
    better: str  # "a", "b" or "tie"


@dataclass
class Curve:
    """A group's learning curve: at each step, the IQM over its runs of the metric's value
    then (a run's latest value at or before the step, never past its last one)."""

    group: str
    steps: list[int]
    iqm: list[float]
    low: list[float]
    high: list[float]
    n: list[int]  # runs per task behind each point


@dataclass
class ProfileCurve:
    group: str
    taus: list[float]
    fraction: list[float]
    low: list[float]
    high: list[float]


@dataclass
class Excluded:
    run_id: str  # the rlx run id ("" when the run has none)
    mlflow_run_id: str
    group: str
    seed: int
    task: str
    reason: str


@dataclass
class Comparison:
    metric: str
    aggregate: str
    last_k: int
    lower_is_better: bool
    confidence: float
    reps: int
    seed: int
    tasks: list[str]
    normalized: bool
    groups: list[GroupStats]  # best first
    pairs: list[PairStats]
    curves: list[Curve]
    profiles: list[ProfileCurve]
    excluded: list[Excluded]
    notes: list[str] = field(default_factory=list)

    @property
    def how(self) -> str:
        """The aggregate in words: ``final``, ``best (max)``, ``last 3``."""
        if self.aggregate == "best":
            return f"best ({'min' if self.lower_is_better else 'max'})"
        return f"last {self.last_k}" if self.aggregate == "last" else self.aggregate

    def to_dict(self) -> dict[str, Any]:
        return finite(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def summary_rows(self) -> list[dict[str, Any]]:
        """The groups table, one row per group, best first (what the CSV and the MLflow
        table hold)."""
        return [{"rank": g.rank, "group": g.label, "values": json.dumps(g.values, sort_keys=True),
                 "runs": g.n_runs, "seeds": " ".join(map(str, g.seeds)), "iqm": g.iqm,
                 "iqm_ci_low": g.iqm_ci[0], "iqm_ci_high": g.iqm_ci[1], "mean": g.mean,
                 "mean_ci_low": g.mean_ci[0], "mean_ci_high": g.mean_ci[1], "median": g.median,
                 "median_ci_low": g.median_ci[0], "median_ci_high": g.median_ci[1], "std": g.std}
                for g in self.groups]

    def pair_rows(self) -> list[dict[str, Any]]:
        return [{"a": p.a, "b": p.b, "p_a_better": p.probability, "ci_low": p.ci[0], "ci_high": p.ci[1],
                 "seeds": p.n_seeds, "verdict": p.verdict} for p in self.pairs]

    def to_csv(self, table: str = "groups") -> str:
        """The groups table (or ``table="pairs"``) as CSV; empty cells where undefined."""
        import csv
        import io

        rows = self.summary_rows() if table == "groups" else self.pair_rows()
        out = io.StringIO()
        if not rows:
            return ""
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
        return out.getvalue()

    def render(self, console: Any) -> None:
        """Rich tables: the groups ranked by IQM, then the pairs with their verdicts, then
        what was left out."""
        from rich.markup import escape
        from rich.table import Table

        n = sum(g.n_runs * len(self.tasks) for g in self.groups)
        unit = " (normalized)" if self.normalized else ""
        console.print(f"[bold]{escape(self.metric)}[/bold], {self.how} per run, {'lower' if self.lower_is_better else 'higher'}"
                      f" is better: {n} runs in {len(self.groups)} group{_s(len(self.groups))}, "
                      f"{len(self.tasks)} task{_s(len(self.tasks))} ({escape(', '.join(self.tasks))})")
        for note in self.notes:
            console.print(f"note: {escape(note)}")
        pct = f"{self.confidence:.0%}"
        table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
        for col, right in (("#", True), ("group", False), ("runs", True), (f"IQM{unit}", True),
                           (f"IQM {pct} CI", False), ("mean", True), (f"mean {pct} CI", False), ("median", True),
                           ("std", True), ("seeds", False)):
            table.add_column(col, no_wrap=col not in ("group", "seeds"), justify="right" if right else "left")
        for g in self.groups:
            no_ci = "n/a: 1 run (a CI needs 2+)"
            table.add_row(str(g.rank), escape(g.label), str(g.n_runs), _num(g.iqm),
                          _ci(g.iqm_ci) if g.has_ci else no_ci, _num(g.mean),
                          _ci(g.mean_ci) if g.has_ci else no_ci, _num(g.median), _num(g.std),
                          escape(" ".join(map(str, g.seeds))))
        console.print(table)
        if len(self.groups) < 2:
            console.print("pairs: a comparison needs two groups; only "
                          f"'{escape(self.groups[0].label)}' is here" if self.groups else "no groups")
        else:
            pairs = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
            for col in ("A", "B", "P(A better)", f"{pct} CI", "verdict"):
                pairs.add_column(col, no_wrap=col not in ("A", "B", "verdict"))
            for p in self.pairs:
                style = "bold" if p.better != "tie" else ""
                pairs.add_row(escape(p.a), escape(p.b), f"{p.probability:.2f}",
                              f"[{p.ci[0]:.2f}, {p.ci[1]:.2f}]" if not math.isnan(p.ci[0]) else "n/a: 1 run",
                              f"[{style}]{escape(p.verdict)}[/{style}]" if style else escape(p.verdict))
            console.print(pairs)
        for e in self.excluded:
            who = e.run_id or e.mlflow_run_id
            console.print(f"excluded: run {escape(who)} ({escape(e.group)}, seed {e.seed}, {escape(e.task)}): "
                          f"{escape(e.reason)}")


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _num(x: float, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def _ci(ci: tuple[float, float]) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


# -- reading runs from MLflow ------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_store(uri: str) -> Any:
    """An MLflow client on ``uri``; a UsageError (and no new file) when it is a SQLite store
    that does not exist: opening one would create an empty store."""
    from rlx import home
    from rlx.tracking import _client

    path = home.sqlite_path(uri)
    if path is not None and not path.is_file():
        raise UsageError(f"no MLflow store at {path}; pass --tracking-uri with the store the runs were logged to")
    return _client(uri)


def _search(client: Any, experiment_ids: list[str], filter_string: str) -> list[Any]:
    from mlflow.entities import ViewType

    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _status(run: Any) -> str:
    """rlx's word for how the run ended (CRASHED is FAILED in MLflow), else MLflow's."""
    return run.data.tags.get("rlx.status") or run.info.status


def _seed(run: Any) -> int:
    for raw in (run.data.tags.get("rlx.seed"), run.data.params.get("run.seed")):
        try:
            return int(str(raw))
        except (TypeError, ValueError):
            continue
    return -1


def _show(value: Any) -> str:
    """A setting's value as ``rlx sweep`` writes it in a cell's label."""
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _label(values: dict, empty: str = _ALL) -> str:
    """``key=value`` pairs, space-separated, in the order given: the style of a sweep's cell labels."""
    return " ".join(f"{k}={_show(v)}" for k, v in values.items()) or empty


def _cell_label(cell_label: str, cell: dict, removed: dict) -> str:
    """The cell's label without the settings that moved to the task: its ``key=value``
    words for them dropped (a label the sweep made from the values, or a listed cell's
    own label with the axes after it); made from what is left when there is no label."""
    if not cell_label:
        return _label({k: v for k, v in cell.items() if k not in removed}, "base")
    words = set(_label(removed, "").split(" "))
    return " ".join(w for w in cell_label.split(" ") if w not in words) or "base"


def _task(env: str, settings: dict) -> str:
    """The environment's name, with the environment settings that tell its variants apart."""
    return f"{env}[{_label(settings)}]" if settings else env


def _is_env_key(key: str) -> bool:
    return key == "env" or key.startswith("env.")


def sweep_refs(uri: str, parent_run_id: str, run_ids: list[str] | None = None) -> list[RunRef]:
    """The runs of a sweep: children of its parent MLflow run (tag ``mlflow.parentRunId``).

    A run's group is its cell (tags ``rlx.cell``, ``rlx.cell_values``) without the settings
    that choose the environment (``env``, ``env.*``), which make its task instead (tag
    ``rlx.env``, plus those settings), so one cell run on two environments is one group on
    two tasks. With
    ``run_ids`` (rlx run ids, tag ``rlx.run_id``) only those runs: the sweep's plan, where a
    rerun replaced a failed run.
    """
    client = open_store(uri)
    try:
        parent = client.get_run(parent_run_id)
    except Exception as exc:
        raise UsageError(f"the sweep's parent MLflow run {parent_run_id} is not in the store '{uri}' "
                         f"({_first_line(exc)}); was the store moved or the run deleted?") from None
    runs = _search(client, [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    wanted = None if run_ids is None else set(run_ids)
    refs = []
    for run in runs:
        tags = run.data.tags
        if wanted is not None and tags.get("rlx.run_id") not in wanted:
            continue
        try:
            cell = json.loads(tags.get("rlx.cell_values") or "{}")
        except json.JSONDecodeError:
            cell = {}
        cell = cell if isinstance(cell, dict) else {}
        values = {k: v for k, v in cell.items() if not _is_env_key(k)}
        env_settings = {k: v for k, v in cell.items() if k.startswith("env.")}
        label = _cell_label(tags.get("rlx.cell", ""), cell, {k: v for k, v in cell.items() if _is_env_key(k)})
        env = tags.get("rlx.env") or run.data.params.get("env.name") or "?"
        refs.append(RunRef(run.info.run_id, label, _seed(run), _task(env, env_settings), _status(run), values))
    return sorted(refs, key=lambda r: (r.group, r.task, r.seed, r.mlflow_run_id))


def find_experiment(client: Any, experiment: str) -> Any:
    """The MLflow experiment named ``experiment``; a UsageError naming close names otherwise."""
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp
    names = sorted(e.name for e in client.search_experiments())
    close = difflib.get_close_matches(experiment, names, n=3, cutoff=0.5)
    hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close else
            f"experiments there: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}" if names else
            "the store has no experiments")
    raise UsageError(f"no MLflow experiment '{experiment}' in the store; {hint}")


def filter_refs(uri: str, experiment: str, filter_string: str = "") -> list[RunRef]:
    """Any runs of an experiment matching an MLflow search filter (``search_runs`` syntax:
    ``params.objective.beta = '0.04' and tags.rlx.status = 'FINISHED'``).

    The groups are made by the params that differ between the matched runs, other than
    ``NOT_SETTINGS`` (seed, name, threads, ... differ without making another experiment);
    the task is param ``env.name``, plus the other ``env.*`` params that differ (two
    configurations of one environment are two tasks). Sweep parent runs are skipped.
    """
    client = open_store(uri)
    exp = find_experiment(client, experiment)
    try:
        runs = _search(client, [exp.experiment_id], filter_string)
    except Exception as exc:
        raise UsageError(f"MLflow rejected the filter '{filter_string}': {_first_line(exc)} (syntax: "
                         "params.objective.beta = '0.04' and tags.rlx.status = 'FINISHED')") from None
    runs = [r for r in runs if r.data.tags.get("rlx.sweep_role") != "parent"]
    if not runs:
        where = f" match --filter \"{filter_string}\"" if filter_string else ""
        raise UsageError(f"no runs in experiment '{experiment}'{where}; widen the filter or check the experiment "
                         "(`rlx runs list`)")
    keys = sorted({k for r in runs for k in r.data.params} - NOT_SETTINGS - {"env.name"})
    differ = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    refs = []
    for run in runs:
        params = run.data.params
        values = {k: params.get(k, "(unset)") for k in differ if not _is_env_key(k)}
        env_settings = {k: params.get(k, "(unset)") for k in differ if _is_env_key(k)}
        env = params.get("env.name") or run.data.tags.get("rlx.env") or "?"
        refs.append(RunRef(run.info.run_id, _label(values), _seed(run), _task(env, env_settings), _status(run),
                           values))
    return sorted(refs, key=lambda r: (r.group, r.task, r.seed, r.mlflow_run_id))


# -- the comparison -----------------------------------------------------------------------------

@dataclass
class _Scored:
    ref: RunRef
    run_id: str
    score: float
    steps: Any  # np.ndarray of the metric's steps, ascending
    history: Any  # np.ndarray of its values at those steps


def _headline_metric(runs: list[Any]) -> str | None:
    """The first headline metric most of the runs name (tag ``rlx.headline``)."""
    firsts = [r.data.tags.get("rlx.headline", "").split(",")[0].strip() for r in runs]
    firsts = [f for f in firsts if f]
    return max(set(firsts), key=lambda f: (firsts.count(f), -firsts.index(f))) if firsts else None


def _aggregate(values: Any, options: CompareOptions) -> float:
    import numpy as np

    if options.aggregate == "final":
        return float(values[-1])
    if options.aggregate == "best":
        return float(np.min(values) if options.lower_is_better else np.max(values))
    return float(np.mean(values[-options.last_k:]))


def _history(client: Any, run_id: str, metric: str) -> tuple[Any, Any]:
    """The finite values of ``metric`` in step order (a step logged twice: its latest)."""
    import numpy as np

    latest: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, metric):
        if math.isfinite(m.value) and (m.step not in latest or m.timestamp >= latest[m.step][0]):
            latest[m.step] = (m.timestamp, m.value)
    steps = sorted(latest)
    return np.array(steps, dtype=np.int64), np.array([latest[s][1] for s in steps], dtype=float)


def _logged_metrics(runs: list[Any], limit: int = 8) -> str:
    names = sorted({k for r in runs for k in r.data.metrics})
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") if names else "none"


def compare(uri: str, refs: list[RunRef], options: CompareOptions) -> Comparison:
    """Read each run's metric from the MLflow store at ``uri`` and compare the groups.

    Runs that did not finish, or never logged a finite value of the metric, are left out
    and listed in ``excluded`` with why. A UsageError when nothing is left to compare: no
    runs, none finished, or the metric logged by none of them (naming those they log).
    """
    options.check()
    if not refs:
        raise UsageError("no runs to compare; check the sweep id, or the experiment and --filter")
    client = open_store(uri)
    runs: dict[str, Any] = {}
    excluded: list[Excluded] = []
    for ref in refs:
        try:
            runs[ref.mlflow_run_id] = client.get_run(ref.mlflow_run_id)
        except Exception as exc:
            excluded.append(Excluded("", ref.mlflow_run_id, ref.group, ref.seed, ref.task,
                                     f"not readable in the MLflow store: {_first_line(exc)}"))
    metric = (options.metric or "").strip() or _headline_metric(list(runs.values()))
    if not metric:
        raise UsageError("no --metric given and the runs carry no headline (tag rlx.headline); pass --metric, "
                         f"one of: {_logged_metrics(list(runs.values()))}")
    finished = [r for r in refs if r.mlflow_run_id in runs and r.status == "FINISHED"]
    for ref in refs:
        if ref.mlflow_run_id in runs and ref.status != "FINISHED":
            excluded.append(_excluded(ref, runs, f"status {ref.status} (only FINISHED runs are compared)"))
    if not finished:
        raise UsageError(f"none of the {len(refs)} runs FINISHED ({_counts(refs)}); wait for them, or resume them "
                         "(`rlx sweep resume ID`, `rlx runs resume ID`)")
    scored: list[_Scored] = []
    for ref in finished:
        steps, values = _history(client, ref.mlflow_run_id, metric)
        if not len(values):
            excluded.append(_excluded(ref, runs, f"logged no finite value of {metric}"))
            continue
        scored.append(_Scored(ref, runs[ref.mlflow_run_id].data.tags.get("rlx.run_id", ""),
                              _aggregate(values, options), steps, values))
    if not scored:
        raise UsageError(f"none of the {len(finished)} finished runs logged metric '{metric}'; they log: "
                         f"{_logged_metrics([runs[r.mlflow_run_id] for r in finished])} (pass --metric)")
    return _compare(scored, excluded, metric, options)


def _counts(refs: list[RunRef]) -> str:
    statuses = [r.status for r in refs]
    return ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))


def _excluded(ref: RunRef, runs: dict[str, Any], reason: str) -> Excluded:
    run = runs.get(ref.mlflow_run_id)
    return Excluded(run.data.tags.get("rlx.run_id", "") if run is not None else "", ref.mlflow_run_id, ref.group,
                    ref.seed, ref.task, reason)


def _as_excluded(s: _Scored, reason: str) -> Excluded:
    return Excluded(s.run_id, s.ref.mlflow_run_id, s.ref.group, s.ref.seed, s.ref.task, reason)


def _columns(runs: list[_Scored], tasks: list[str], label: str) -> tuple[list[list[_Scored]], list[Excluded]]:
    """The group's runs as one list per task, all of one length (a ``(runs, tasks)``
    matrix): runs of seeds present on every task first; the rest left out."""
    by_task = {t: [s for s in runs if s.ref.task == t] for t in tasks}
    k = min(len(v) for v in by_task.values())
    short = min(tasks, key=lambda t: len(by_task[t]))
    common = set.intersection(*({s.ref.seed for s in v} for v in by_task.values()))
    cols, dropped = [], []
    for t in tasks:
        ordered = sorted(by_task[t], key=lambda s: (s.ref.seed not in common, s.ref.seed, s.ref.mlflow_run_id))
        cols.append(ordered[:k])
        dropped += [_as_excluded(s, f"group '{label}' has {k} usable run{_s(k)} on task '{short}'; "
                                    f"each task keeps {k}") for s in ordered[k:]]
    return cols, dropped


def _compare(scored: list[_Scored], excluded: list[Excluded], metric: str, options: CompareOptions) -> Comparison:
    import numpy as np

    from rlx import stats

    labels = list(dict.fromkeys(s.ref.group for s in sorted(scored, key=lambda s: s.ref.group)))
    by_group = {g: [s for s in scored if s.ref.group == g] for g in labels}
    task_sets = {g: {s.ref.task for s in v} for g, v in by_group.items()}
    tasks = sorted(set.intersection(*task_sets.values()))
    if not tasks:
        raise UsageError("the groups share no task (environment): "
                         + "; ".join(f"{g}: {', '.join(sorted(t))}" for g, t in task_sets.items())
                         + "; compare runs of the same environment (narrow --filter)")
    columns: dict[str, list[list[_Scored]]] = {}
    for g in labels:
        for s in by_group[g]:
            if s.ref.task not in tasks:
                missing = [h for h in labels if s.ref.task not in task_sets[h]]
                excluded.append(_as_excluded(s, f"task '{s.ref.task}' is not run by every group (missing in "
                                                f"{', '.join(missing)}); pairs compare on common tasks"))
        columns[g], dropped = _columns([s for s in by_group[g] if s.ref.task in tasks], tasks, g)
        excluded.extend(dropped)
    raw = {g: np.array([[s.score for s in row] for row in zip(*cols)]) for g, cols in columns.items()}
    normalized = len(tasks) > 1
    notes = []
    if normalized:
        mats = stats.normalize(raw, lower_is_better=options.lower_is_better)
        notes.append(f"{len(tasks)} tasks: scores normalized per task to [0, 1] (min-max over all runs of that task; "
                     "1 = best) before IQM, mean, median, probability of improvement and profiles")
        sign = 1.0  # normalized scores are higher-is-better
    else:
        mats = raw
        sign = -1.0 if options.lower_is_better else 1.0
    groups = [_group_stats(g, columns[g], mats[g], options) for g in labels]
    groups.sort(key=lambda gs: (-sign * gs.iqm if math.isfinite(gs.iqm) else math.inf, gs.label))
    for i, gs in enumerate(groups, 1):
        gs.rank = i
    pairs = []
    for i, ga in enumerate(groups):
        for gb in groups[i + 1:]:
            x, y = sign * mats[ga.label], sign * mats[gb.label]
            p = stats.probability_of_improvement(x, y)
            ci = stats.probability_of_improvement_ci(x, y, options.reps, options.confidence, options.seed)
            n = min(ga.n_runs, gb.n_runs)
            pairs.append(PairStats(ga.label, gb.label, p, ci, n, stats.verdict(ga.label, gb.label, *ci, n),
                                   stats.verdict_kind(*ci)))
    order = [gs.label for gs in groups]
    curves = _curves(columns, tasks, order, options, normalized)
    profiles = _profiles({g: mats[g] for g in order}, options, lower_is_better=sign < 0)
    return Comparison(metric, options.aggregate, options.last_k, options.lower_is_better, options.confidence,
                      options.reps, options.seed, tasks, normalized, groups, pairs, curves, profiles, excluded, notes)


def _group_stats(label: str, cols: list[list[_Scored]], mat: Any, options: CompareOptions) -> GroupStats:
    from rlx import stats

    ci = {name: stats.stratified_bootstrap_ci(mat, fn, options.reps, options.confidence, options.seed)
          for name, fn in (("iqm", stats.iqm), ("mean", stats.mean), ("median", stats.median))}
    kept = [s for col in cols for s in col]
    values = kept[0].ref.values if kept else {}
    return GroupStats(label, values, mat.shape[0], sorted({s.ref.seed for s in kept}), stats.mean(mat),
                      stats.median(mat), stats.iqm(mat), stats.std(mat), ci["iqm"], ci["mean"], ci["median"],
                      scores=[{"run_id": s.run_id, "mlflow_run_id": s.ref.mlflow_run_id, "seed": s.ref.seed,
                               "task": s.ref.task, "score": s.score} for s in kept])


def _grid(steps: list[Any]) -> Any:
    import numpy as np

    grid = np.unique(np.concatenate(steps))
    if len(grid) > _MAX_POINTS:
        grid = grid[np.unique(np.linspace(0, len(grid) - 1, _MAX_POINTS).round().astype(int))]
    return grid


def _at(s: _Scored, grid: Any) -> Any:
    """The run's latest value at or before each grid step; NaN before its first step and
    after its last."""
    import numpy as np

    i = np.searchsorted(s.steps, grid, side="right") - 1
    out = s.history[np.clip(i, 0, None)]
    return np.where((i < 0) | (grid > s.steps[-1]), np.nan, out)


def _curves(columns: dict[str, list[list[_Scored]]], tasks: list[str], order: list[str], options: CompareOptions,
            normalized: bool) -> list[Curve]:
    """Learning curves: per group and step, the IQM over runs (and tasks) with its CI."""
    import numpy as np

    from rlx import stats

    bounds: list[tuple[float, float]] = []
    if normalized:  # each task's histories over all groups map to [0, 1], 1 = best
        for j in range(len(tasks)):
            vals = np.concatenate([s.history for cols in columns.values() for s in cols[j]])
            bounds.append((float(vals.min()), float(vals.max())))
    out = []
    for g in order:
        cols = columns[g]
        grid = _grid([s.steps for col in cols for s in col])
        cube = np.stack([np.stack([_at(s, grid) for s in col], axis=0) for col in cols], axis=1)  # runs, tasks, steps
        if normalized:
            lows = np.array([b[0] for b in bounds])[None, :, None]
            spans = np.array([b[1] - b[0] for b in bounds])[None, :, None]
            z = (lows + spans - cube) if options.lower_is_better else (cube - lows)
            cube = np.where(spans == 0, 0.0, z / np.where(spans == 0, 1.0, spans))
        iqm, low, high = (np.full(len(grid), np.nan) for _ in range(3))
        n = np.zeros(len(grid), dtype=int)
        present = ~np.isnan(cube)  # runs, tasks, steps
        patterns: dict[bytes, list[int]] = {}
        for t in range(len(grid)):
            patterns.setdefault(present[:, :, t].tobytes(), []).append(t)
        for idx in patterns.values():
            mask = present[:, :, idx[0]]
            k = int(mask.sum(axis=0).min())
            if k == 0:
                continue
            sub = np.stack([cube[mask[:, j], j][:k][:, idx] for j in range(cube.shape[1])], axis=1)
            iqm[idx] = stats.iqm(sub, axis=(0, 1))
            lo, hi = stats.stratified_bootstrap_ci(sub, stats.iqm, options.reps, options.confidence, options.seed)
            low[idx], high[idx], n[idx] = lo, hi, k
        out.append(Curve(g, [int(s) for s in grid], iqm.tolist(), low.tolist(), high.tolist(), n.tolist()))
    return out


def _profiles(mats: dict[str, Any], options: CompareOptions, lower_is_better: bool) -> list[ProfileCurve]:
    """Performance profiles of every group over one shared range of thresholds."""
    import numpy as np

    from rlx import stats

    pooled = np.concatenate([m.ravel() for m in mats.values()])
    lo, hi = float(pooled.min()), float(pooled.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.5  # from a threshold every run clears to one none does
    taus = np.linspace(lo - pad, hi + pad, _TAUS)
    out = []
    for g, m in mats.items():
        p = stats.performance_profile(m, taus, options.reps, options.confidence, options.seed, lower_is_better)
        out.append(ProfileCurve(g, p.taus.tolist(), p.fraction.tolist(), p.low.tolist(), p.high.tolist()))
    return out


# -- logging to the sweep's parent run ---------------------------------------------------------

def _log_table(client: Any, run_id: str, rows: list[dict[str, Any]], artifact_file: str) -> None:
    """A table the MLflow UI shows, replaced (``log_table`` alone appends to an existing one)."""
    import os
    import posixpath
    import tempfile

    import pandas as pd

    frame = pd.DataFrame(rows)
    folder = posixpath.dirname(artifact_file)
    if artifact_file not in [f.path for f in client.list_artifacts(run_id, folder)]:
        import warnings

        with warnings.catch_warnings():  # MLflow's own use of pandas (select_dtypes) warns under pandas 3
            warnings.filterwarnings("ignore", message=".*'str' dtypes are included by select_dtypes",
                                    category=DeprecationWarning)
            client.log_table(run_id, data=frame, artifact_file=artifact_file)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, posixpath.basename(artifact_file))
        frame.to_json(path, orient="split", index=False)  # the format log_table writes
        client.log_artifact(run_id, path, folder)


def log_comparison(uri: str, parent_run_id: str, comparison: Comparison) -> None:
    """Put the comparison on the sweep's parent run: ``compare/summary.json`` and
    ``compare/pairs.json`` (tables in the MLflow UI), ``compare/comparison.json`` (all of
    it), ``compare/summary.csv`` and PNG plots (``intervals``, ``curves``, ``profiles``,
    ``improvement``). Logged again, each replaces the last."""
    from rlx.errors import RlxError

    client = open_store(uri)
    try:
        client.get_run(parent_run_id)  # a clear error before anything is written
        _log_table(client, parent_run_id, comparison.summary_rows(), "compare/summary.json")
        if comparison.pairs:
            _log_table(client, parent_run_id, comparison.pair_rows(), "compare/pairs.json")
        client.log_text(parent_run_id, comparison.to_json(), "compare/comparison.json")
        client.log_text(parent_run_id, comparison.to_csv(), "compare/summary.csv")
        for name, fig in figures(comparison).items():
            client.log_figure(parent_run_id, fig, f"compare/{name}.png")
    except Exception as exc:
        raise RlxError(f"could not log the comparison to MLflow run {parent_run_id} in '{uri}': {_first_line(exc)}; "
                       "--no-log skips logging") from None


# -- plots -------------------------------------------------------------------------------------

def figures(comparison: Comparison) -> dict[str, Any]:
    """matplotlib figures (no pyplot, so no global backend is chosen): ``intervals``,
    ``curves``, ``profiles`` and, with two groups or more, ``improvement``."""
    out = {"intervals": _intervals_figure(comparison), "curves": _curves_figure(comparison),
           "profiles": _profiles_figure(comparison)}
    if comparison.pairs:
        out["improvement"] = _improvement_figure(comparison)
    return out


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _unit(comparison: Comparison) -> str:
    return f"{comparison.metric} ({comparison.how}{', normalized' if comparison.normalized else ''})"


def _intervals_figure(c: Comparison) -> Any:
    """IQM, mean and median of each group: a dot at the estimate, a bar over its CI."""
    groups = list(reversed(c.groups))  # best on top
    fig, axes = _figure(11, 1.2 + 0.45 * len(groups), 3)
    for ax, (name, point, ci) in zip(axes, (("IQM", "iqm", "iqm_ci"), ("Mean", "mean", "mean_ci"),
                                            ("Median", "median", "median_ci"))):
        for y, g in enumerate(groups):
            low, high = getattr(g, ci)
            color = f"C{g.rank - 1}"
            if math.isfinite(low) and math.isfinite(high):
                ax.plot([low, high], [y, y], color=color, linewidth=6, alpha=0.45, solid_capstyle="butt")
            ax.plot([getattr(g, point)], [y], "o", color=color)
        ax.set_yticks(range(len(groups)), [g.label for g in groups] if ax is axes[0] else [])
        ax.set_title(name)
        ax.grid(axis="x", alpha=0.3)
    fig.supxlabel(f"{_unit(c)}: {c.confidence:.0%} stratified-bootstrap CIs")
    return fig


def _bands(c: Comparison, lines: list[tuple[str, Any, Any, Any, Any]], step: bool) -> tuple[Any, Any]:
    """One line per group (its colour from its rank) with its CI band: (group, x, y, low, high)."""
    fig, (ax,) = _figure(8, 4.5)
    ranks = {g.label: g.rank for g in c.groups}
    for group, x, y, low, high in lines:
        color = f"C{ranks[group] - 1}"
        ax.plot(x, y, color=color, label=group, drawstyle="steps-post" if step else "default")
        ax.fill_between(x, [_nan(v) for v in low], [_nan(v) for v in high], color=color, alpha=0.2, linewidth=0,
                        step="post" if step else None)
    return fig, ax


def _curves_figure(c: Comparison) -> Any:
    """IQM over the runs at each logged step, with its CI band."""
    fig, ax = _bands(c, [(k.group, k.steps, k.iqm, k.low, k.high) for k in c.curves], step=False)
    ax.set_xlabel("step")
    ax.set_ylabel(f"IQM of {c.metric}{' (normalized)' if c.normalized else ''}")
    ax.set_title(f"Learning curves ({c.confidence:.0%} CI bands)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _profiles_figure(c: Comparison) -> Any:
    """The fraction of runs scoring above each threshold, with its CI band."""
    fig, ax = _bands(c, [(p.group, p.taus, p.fraction, p.low, p.high) for p in c.profiles], step=True)
    ax.set_xlabel(f"threshold on {_unit(c)}")
    ax.set_ylabel(f"fraction of runs {'below' if c.lower_is_better and not c.normalized else 'above'}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Performance profiles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _improvement_figure(c: Comparison) -> Any:
    """P(A better than B) per pair with its CI; 0.5 is no difference."""
    pairs = list(reversed(c.pairs))
    fig, (ax,) = _figure(8, 1.2 + 0.45 * len(pairs))
    for y, p in enumerate(pairs):
        color = {"a": "C2", "b": "C3"}.get(p.better, "C7")
        if math.isfinite(p.ci[0]):
            ax.plot(list(p.ci), [y, y], color=color, linewidth=6, alpha=0.45, solid_capstyle="butt")
        ax.plot([p.probability], [y], "o", color=color)
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(pairs)), [f"{p.a} vs {p.b}" for p in pairs])
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(f"P(A better than B), {c.confidence:.0%} CI")
    ax.set_title("Probability of improvement")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _nan(v: float | None) -> float:
    return math.nan if v is None else v
