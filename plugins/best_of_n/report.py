"""The run's best-of-n curve as files: ``best_of_n.json``, ``best_of_n_table.json`` and
``best_of_n.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(folder: Path, curve: list[dict[str, Any]], examples: list[dict[str, Any]], *, n_max: int,
          steps: int) -> None:
    """The table (one row per n) and the last step's examples as JSON, the curve alone as
    an MLflow table, and the plot."""
    table = {"n_max": n_max, "steps": steps, "curve": curve, "examples": examples}
    (folder / "best_of_n.json").write_text(json.dumps(table, indent=2))
    (folder / TABLE).write_text(json.dumps(mlflow_table(curve)))
    plot(curve, folder / "best_of_n.png")


TABLE = "best_of_n_table.json"
COLUMNS = ("n", "kl_bound", "reward", "accuracy", "pass")


def mlflow_table(curve: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The curve in the layout ``mlflow.log_table`` writes and ``mlflow.load_table`` reads
    (pandas ``orient="split"`` without an index): ``{"columns": [...], "data": [[...], ...]}``."""
    # written as a file because Objective.artifacts() only gets a folder; MLflow lists a
    # table as one (load_table, the UI's table views) only once the run's tag
    # mlflow.loggedArtifacts names it, which the loop, not the objective, can set
    return {"columns": list(COLUMNS), "data": [[row[c] for c in COLUMNS] for row in curve]}


def plot(curve: list[dict[str, Any]], path: Path) -> None:
    """Left: reward (and gold accuracy, with pass@n as its ceiling) against n on a log2
    axis. Right: reward against the KL bound, the price the curve is paid in."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in curve]
    rewards = [r["reward"] for r in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    try:
        left.plot(ns, rewards, marker="o", color="C0", label="reward")
        left.set_xscale("log", base=2)
        left.set_xticks(ns, [str(n) for n in ns])
        left.set_xlabel("n (samples per prompt)")
        left.set_ylabel("expected reward of the best", color="C0")
        left.grid(alpha=0.3)
        if curve[0]["accuracy"] is not None:
            # accuracy lives on [0, 1], the reward on its own scale: a second axis keeps both readable
            acc = left.twinx()
            acc.plot(ns, [r["accuracy"] for r in curve], marker="s", color="C1", label="gold accuracy")
            acc.plot(ns, [r["pass"] for r in curve], ls="--", color="C2", label="pass@n (perfect judge)")
            acc.set_ylabel("accuracy", color="C1")
            lines = left.get_lines() + acc.get_lines()
            acc.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
        left.set_title("best-of-n against n")
        right.plot([r["kl_bound"] for r in curve], rewards, marker="o", color="C0")
        for r in curve:
            right.annotate(f"n={r['n']}", (r["kl_bound"], r["reward"]), textcoords="offset points", xytext=(4, -10),
                           fontsize=8)
        right.set_xlabel("KL bound: log n - (n-1)/n (nats)")
        right.set_ylabel("expected reward of the best")
        right.set_title("reward against KL")
        right.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
