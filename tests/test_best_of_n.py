"""``best-of-n``: the order-statistics estimator against enumeration of every n-subset,
the KL bound by hand, the logged metrics (running means that agree with the artifacts,
names that sort numerically, the same after a resume), and a real run's metrics and
artifacts."""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from rlx.batch import Batch
from rlx.environment import TextEnvironment
from rlx.plugins.best_of_n import estimator


def brute_force(rewards: list[float], correct: list[bool], n: int) -> tuple[float, float, float]:
    """Mean over all n-subsets of the kept sample's reward and correctness (ties go to
    the later sample, as the stable ascending sort keeps it), and of any-correct."""
    subsets = list(itertools.combinations(range(len(rewards)), n))
    kept = [max(s, key=lambda i: (rewards[i], i)) for s in subsets]
    return (sum(rewards[i] for i in kept) / len(subsets), sum(correct[i] for i in kept) / len(subsets),
            sum(any(correct[i] for i in s) for s in subsets) / len(subsets))


@pytest.mark.parametrize("rewards,correct", [
    ([0.5, 2.0, -1.0, 3.0, 0.0], [False, True, False, True, False]),
    ([1.0, 1.0, 0.0, 1.0, 2.0, 1.0], [True, False, False, True, False, False]),  # ties with differing correctness
    ([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0], [False, True, False, False, True, False, True]),  # all tied
    ([3.0, -0.5, 3.0, 1.5, 0.25, 3.0, -2.0, 1.5], [True, False, False, True, True, False, False, True]),
])
def test_estimator_matches_enumeration(rewards, correct):
    ns = list(range(1, len(rewards) + 1))
    # two prompts (the second a permutation of the first) to check rows stay independent
    perm = torch.randperm(len(rewards), generator=torch.Generator().manual_seed(0)).tolist()
    r = torch.tensor([rewards, [rewards[i] for i in perm]])
    c = torch.tensor([correct, [correct[i] for i in perm]])
    reward_at, accuracy_at = estimator.best_of_n(r, ns, c)
    pass_at = estimator.pass_at(c, ns)
    for row, (rr, cc) in enumerate([(rewards, correct), ([rewards[i] for i in perm], [correct[i] for i in perm])]):
        for k, n in enumerate(ns):
            want = brute_force(rr, cc, n)
            assert float(reward_at[row, k]) == pytest.approx(want[0], abs=1e-12)
            assert float(accuracy_at[row, k]) == pytest.approx(want[1], abs=1e-12)
            assert float(pass_at[row, k]) == pytest.approx(want[2], abs=1e-12)
    assert torch.allclose(reward_at[:, 0], r.double().mean(-1)) and torch.allclose(reward_at[:, -1], r.double().max(-1).values)


def test_sizes_and_weights():
    assert estimator.sizes(16) == [1, 2, 4, 8, 16]
    assert estimator.sizes(12) == [1, 2, 4, 8, 12]
    assert estimator.sizes(2) == [1, 2]
    w = estimator.selection_weights(12, estimator.sizes(12))
    assert torch.allclose(w.sum(-1), torch.ones(5, dtype=torch.float64))  # each row is a distribution over ranks
    assert torch.allclose(w[0], torch.full((12,), 1 / 12, dtype=torch.float64))  # n=1: the mean
    assert w[-1].tolist() == [0.0] * 11 + [1.0]  # n=N: the maximum


def test_kl_bound_by_hand():
    assert estimator.kl_bound(1) == 0.0
    assert estimator.kl_bound(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert estimator.kl_bound(4) == pytest.approx(1.3862944 - 0.75)  # 0.6363
    assert estimator.kl_bound(16) == pytest.approx(2.7725887 - 15 / 16)  # 1.8351


class _Env(TextEnvironment):
    def __init__(self):
        super().__init__(None)

    def sample(self, n):
        return []

    def eval_tasks(self):
        return []

    def is_correct(self, task, completion):
        return completion == task["answer"]


def _batch(rewards: list[list[float]], answers: list[list[str]]) -> Batch:
    """Outcome rewards on each sample's last token, as the loop's ``combine`` leaves them."""
    n = len(rewards[0])
    flat = [r for row in rewards for r in row]
    placed = torch.zeros(len(flat), 3)
    placed[:, -1] = torch.tensor(flat)
    tasks = [{"prompt": f"Q{p}", "answer": "yes"} for p in range(len(rewards)) for _ in range(n)]
    return Batch({"rewards": placed, "mask": torch.ones(len(flat), 3),
                  "group": torch.tensor([p for p in range(len(rewards)) for _ in range(n)])},
                 {"task": tasks, "prompt": [t["prompt"] for t in tasks], "completion": [a for row in answers for a in row]})


def test_objective_metrics_state_and_no_loss(tmp_path):
    from rlx.plugins.best_of_n.config import BestOfNConfig
    from rlx.plugins.best_of_n.objective import BestOfN

    obj = BestOfN(BestOfNConfig(n=4, examples=1), env=_Env(), max_new_tokens=8, env_kind="text")
    assert obj.group_size == 4
    from rlx.registry import get_registry

    assert get_registry().get("objective", "best-of-n").meta["produces"] == "nothing"  # stated once, registered
    batch = _batch([[0.0, 1.0, 3.0, 2.0], [1.0, 1.0, 1.0, 1.0]], [["no", "yes", "no", "yes"], ["yes", "no", "no", "no"]])
    m = obj.prepare(batch, None, None)
    assert m["bon/reward_at_1"] == pytest.approx((1.5 + 1.0) / 2) and m["bon/reward_mean"] == m["bon/reward_at_1"]
    assert m["bon/reward_at_4"] == pytest.approx((3.0 + 1.0) / 2)
    assert m["bon/accuracy_at_4"] == pytest.approx(0.0)  # the top reward is wrong; all-tied keeps the last ("no")
    assert m["bon/pass_at_4"] == pytest.approx(1.0)
    assert m["bon/kl_bound_at_4"] == pytest.approx(math.log(4) - 0.75)
    assert list(obj.minibatches(batch)) == []
    with pytest.raises(Exception, match="trains nothing"):
        obj.loss(None, batch)
    assert obj.examples == [{"prompt": "Q0", "completion": "no", "reward": 3.0, "group_mean_reward": 1.5,
                             "correct": False}]
    # a resumed run keeps the running sums: the curve covers steps before and after the resume
    again = BestOfN(BestOfNConfig(n=4, examples=1), env=_Env())
    again.load_state_dict(json.loads(json.dumps(obj.state_dict())))
    again.prepare(_batch([[1.0, 0.0, 0.0, 0.0]] * 2, [["yes"] * 4] * 2), None, None)
    row4 = again.curve()[-1]
    assert row4["n"] == 4 and row4["reward"] == pytest.approx((2.0 + 1.0) / 2) and row4["accuracy"] == pytest.approx(0.5)
    again.artifacts(tmp_path)
    table = json.loads((tmp_path / "best_of_n.json").read_text())
    assert table["steps"] == 2 and [r["n"] for r in table["curve"]] == [1, 2, 4]
    assert (tmp_path / "best_of_n.png").stat().st_size > 0


def test_without_a_judge_there_is_no_accuracy():
    from rlx.plugins.best_of_n.config import BestOfNConfig
    from rlx.plugins.best_of_n.objective import BestOfN

    obj = BestOfN(BestOfNConfig(n=2))
    m = obj.prepare(_batch([[0.0, 1.0]], [["a", "b"]]), None, None)
    assert not any(k.startswith(("bon/accuracy", "bon/pass")) for k in m) and m["bon/reward_at_2"] == 1.0
    assert obj.curve()[0]["accuracy"] is None


def _objective(n: int = 16):
    from rlx.plugins.best_of_n.config import BestOfNConfig
    from rlx.plugins.best_of_n.objective import BestOfN

    return BestOfN(BestOfNConfig(n=n, examples=1), env=_Env())


def _batches(n: int, count: int) -> list[Batch]:
    """``count`` steps of 2 prompts x ``n`` samples, rewards and answers drawn anew each
    step; the rewards rise by 1 a step, so a step's value and the running mean differ."""
    g = torch.Generator().manual_seed(0)
    out = []
    for step in range(count):
        rewards = (torch.randint(0, 5, (2, n), generator=g) + step).float().tolist()
        right = (torch.rand(2, n, generator=g) < 0.3).tolist()
        out.append(_batch(rewards, [["yes" if r else "no" for r in row] for row in right]))
    return out


def test_metric_names_are_zero_padded_to_sort_numerically():
    m = _objective(16).prepare(_batches(16, 1)[0], None, None)
    for prefix in ("bon/reward_at_", "bon/accuracy_at_", "bon/pass_at_", "bon/kl_bound_at_", "bon_step/reward_at_",
                   "bon_step/accuracy_at_", "bon_step/pass_at_"):
        names = sorted(k for k in m if k.startswith(prefix))  # MLflow's order: as strings
        assert names == [f"{prefix}{n:02d}" for n in (1, 2, 4, 8, 16)], prefix
    assert not any(k.startswith("bon_step/kl_bound") for k in m)  # a constant: one copy is enough
    # the width is the number of digits of N
    assert [_objective(9).metric_name(f"reward@{n}") for n in (1, 8, 9)] == ["reward_at_1", "reward_at_8", "reward_at_9"]
    assert [_objective(100).metric_name(f"pass@{n}") for n in (1, 64, 100)] == ["pass_at_001", "pass_at_064",
                                                                                 "pass_at_100"]
    assert _objective(12).metric_name("reward_mean") == "reward_mean"


def test_logged_values_are_running_means_that_match_the_artifacts(tmp_path):
    obj = _objective(16)
    logged = [obj.prepare(b, None, None) for b in _batches(16, 3)]
    for k, m in enumerate(logged, 1):
        raw = [key for key in m if key.startswith("bon_step/")]
        assert len(raw) == 16  # reward, accuracy and pass at 5 sizes, and reward_mean
        for key in raw:
            head = "bon/" + key.removeprefix("bon_step/")
            assert m[head] == pytest.approx(sum(step[key] for step in logged[:k]) / k, abs=1e-12), (k, key)
    last = logged[-1]
    # the batches differ, so a last-step value logged under bon/ would fail the checks below
    assert abs(last["bon/accuracy_at_16"] - last["bon_step/accuracy_at_16"]) > 0.05
    assert abs(last["bon/reward_at_16"] - last["bon_step/reward_at_16"]) > 0.5
    assert last["bon/reward_mean"] == last["bon/reward_at_01"]

    obj.artifacts(tmp_path)
    report = json.loads((tmp_path / "best_of_n.json").read_text())
    assert report["steps"] == 3
    for row in report["curve"]:
        n = row["n"]
        assert row["reward"] == pytest.approx(last[f"bon/reward_at_{n:02d}"], abs=1e-12)
        assert row["accuracy"] == pytest.approx(last[f"bon/accuracy_at_{n:02d}"], abs=1e-12)
        assert row["pass"] == pytest.approx(last[f"bon/pass_at_{n:02d}"], abs=1e-12)
        assert row["kl_bound"] == pytest.approx(last[f"bon/kl_bound_at_{n:02d}"])

    text = (tmp_path / "best_of_n_table.json").read_text()
    columns = ["n", "kl_bound", "reward", "accuracy", "pass"]
    assert json.loads(text) == {"columns": columns, "data": [[row[c] for c in columns] for row in report["curve"]]}
    import pandas as pd

    frame = pd.read_json(io.StringIO(text), orient="split")  # as mlflow.load_table reads a .json table
    assert list(frame.columns) == columns and frame["n"].tolist() == [1, 2, 4, 8, 16]
    assert frame["accuracy"].tolist() == pytest.approx([last[f"bon/accuracy_at_{n:02d}"] for n in (1, 2, 4, 8, 16)])


def test_a_resumed_run_logs_what_an_uninterrupted_one_does():
    batches = _batches(16, 3)
    straight = _objective(16)
    want = [straight.prepare(b, None, None) for b in batches]
    first = _objective(16)
    first.prepare(batches[0], None, None)
    resumed = _objective(16)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # checkpoints hold the state as JSON
    assert [resumed.prepare(b, None, None) for b in batches[1:]] == want[1:]  # exactly, not approximately
    assert resumed.curve() == straight.curve() and resumed.state_dict() == straight.state_dict()


def test_a_checkpoint_from_before_the_padded_names_still_resumes():
    batches = _batches(16, 2)
    straight = _objective(16)
    for b in batches:
        straight.prepare(b, None, None)
    old = _objective(16)
    old.prepare(batches[0], None, None)
    state = old.state_dict()
    # the earlier layout: sums keyed by the unpadded metric names ("bon/reward_at_1", "bon/reward_mean")
    state["sums"] = {"bon/" + k.replace("@", "_at_"): v for k, v in state["sums"].items()}
    assert "bon/accuracy_at_16" in state["sums"] and "bon/reward_mean" in state["sums"]
    resumed = _objective(16)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    resumed.prepare(batches[1], None, None)
    assert resumed.curve() == straight.curve()


@pytest.mark.slow
def test_real_run_logs_curve_and_artifacts(tmp_path):
    from _cli import latest_run, metric_history, rlx

    proc = rlx("run", "--objective", "best-of-n", "--reward", "prm", "--steps", "2", "--set", "run.batch_size=2",
               "--set", "objective.n=16", "--set", "env.eval_size=16", "--set", "run.threads=1", "--no-progress",
               home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    mlflow_id = run["mlflow_run_id"]
    mlflow_run = client.get_run(mlflow_id)
    assert mlflow_run.info.status == "FINISHED" and run["status"] == "FINISHED"
    ns = (1, 2, 4, 8, 16)
    shown = mlflow_run.data.metrics  # the last value of each metric: what MLflow's runs table shows
    assert sorted(k for k in shown if k.startswith("bon/reward_at_")) == [f"bon/reward_at_{n:02d}" for n in ns]
    rewards = [shown[f"bon/reward_at_{n:02d}"] for n in ns]
    assert all(a <= b + 1e-9 for a, b in zip(rewards, rewards[1:]))
    for key in ("bon/accuracy_at_16", "bon/kl_bound_at_16", "bon/reward_mean", "bon_step/reward_at_16", "reward/mean"):
        assert len(metric_history(client, mlflow_id, key)) == 2, key
    raw = [m.value for m in metric_history(client, mlflow_id, "bon_step/accuracy_at_04")]
    assert [m.value for m in metric_history(client, mlflow_id, "bon/accuracy_at_04")] == \
        pytest.approx([raw[0], (raw[0] + raw[1]) / 2], abs=1e-12)
    assert not metric_history(client, mlflow_id, "eval/accuracy")  # nothing trained: nothing to evaluate
    artifacts = {a.path for a in client.list_artifacts(mlflow_id)}
    assert {"best_of_n.png", "best_of_n.json", "best_of_n_table.json"} <= artifacts and "policy" not in artifacts
    assert not (tmp_path / "runs" / run["id"] / "policy").exists() and not run.get("policy_dir")

    def artifact(name: str) -> dict:
        folder = tmp_path / "downloaded"
        folder.mkdir(exist_ok=True)
        return json.loads(Path(client.download_artifacts(mlflow_id, name, str(folder))).read_text())

    curve = artifact("best_of_n.json")["curve"]
    for row in curve:  # the runs table agrees with the artifacts
        for field in ("reward", "accuracy", "pass"):
            assert shown[f"bon/{field}_at_{row['n']:02d}"] == pytest.approx(row[field], abs=1e-9), (field, row["n"])
    table = artifact("best_of_n_table.json")
    assert table["columns"] == ["n", "kl_bound", "reward", "accuracy", "pass"]
    assert table["data"] == [[row[c] for c in table["columns"]] for row in curve]
    # the loop marks it as a table, so MLflow reads it as one; and nothing trained: no optimizer metrics
    logged = json.loads(mlflow_run.data.tags["mlflow.loggedArtifacts"])
    assert {"path": "best_of_n_table.json", "type": "table"} in logged
    assert not any(k.startswith("optim/") for k in shown), sorted(shown)
