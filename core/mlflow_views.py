"""The runs-table views rlx saves on each experiment, so that MLflow's UI opens on the
columns that matter instead of its bare defaults (name, time, dataset, source, models).

MLflow keeps a table's columns and grouping in the browser (localStorage), with no
per-experiment default on the server; what a server can hold is a *shared view*: the
experiment tag ``mlflow.sharedViewState.<key>``, which the URL
``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens and the table's "Views" menu
lists by name. rlx writes two:

- ``rlx``: objective, rewards, task, variant and seed, and the headline metrics of the
  runs logged there (``rlx ui`` links it);
- ``rlx-seeds``: the same, grouped by ``rlx.group``: one row per configuration, its
  seeds inside, and charts of their mean.
"""

from __future__ import annotations

import json
import time
from typing import Any

VIEW = "rlx"
GROUPED_VIEW = "rlx-seeds"
_TAG = "mlflow.sharedViewState."
_TAG_COLUMNS = ("rlx.objective", "rlx.rewards", "rlx.task", "rlx.variant", "rlx.seed")
# MLflow's own columns that stay (the rest of its defaults, run name and time, always show)
_KEPT = ("attributes.`Dataset`", "attributes.`Models`")


def _columns(metrics: list[str]) -> list[str]:
    return [*_KEPT, *(f"tags.`{t}`" for t in _TAG_COLUMNS), *(f"metrics.`{m}`" for m in metrics)]


def _view(name: str, metrics: list[str], group: bool) -> str:
    state: dict[str, Any] = {"selectedColumns": _columns(metrics)}
    if group:
        state["groupBy"] = {"aggregateFunction": "average",
                            "groupByKeys": [{"mode": "tag", "groupByData": "rlx.group"}]}
    now = int(time.time() * 1000)
    return json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


def _metrics_of(value: str | None) -> list[str]:
    """The headline metrics a saved rlx view already shows."""
    if not value:
        return []
    try:
        state = json.loads(json.loads(value)["state"])
        return [c[len("metrics.`"):-1] for c in state["selectedColumns"] if c.startswith("metrics.`")]
    except (ValueError, KeyError, TypeError):
        return []


def ensure_views(client: Any, experiment_id: str, headline: list[str]) -> None:
    """Save (or widen with new headline metrics) rlx's views on the experiment. Call under
    the store lock: runs starting together would otherwise each write their own."""
    tags = client.get_experiment(experiment_id).tags
    shown = _metrics_of(tags.get(_TAG + VIEW))
    metrics = [*shown, *(m for m in headline if m and m not in shown)]
    if shown and metrics == shown and _TAG + GROUPED_VIEW in tags:
        return
    client.set_experiment_tag(experiment_id, _TAG + VIEW, _view("rlx: runs", metrics, group=False))
    client.set_experiment_tag(experiment_id, _TAG + GROUPED_VIEW, _view("rlx: seeds grouped", metrics, group=True))


def runs_table_url(root: str, experiment_id: str, view: str | None = VIEW) -> str:
    """The runs table of an experiment on the MLflow UI at ``root`` (ends with '/'), in the
    model-training view (MLflow 3 opens on its GenAI pages otherwise), with rlx's view."""
    shared = f"viewStateShareKey={view}&" if view else ""
    return f"{root}#/experiments/{experiment_id}/runs?{shared}workflowType=machine_learning"


def run_page_url(root: str, experiment_id: str, run_id: str) -> str:
    """A run's page on the MLflow UI at ``root`` (ends with '/')."""
    return f"{root}#/experiments/{experiment_id}/runs/{run_id}"
