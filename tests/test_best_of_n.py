"""``best-of-n``: the order-statistics estimator against enumeration of every n-subset,
the KL bound by hand, and a real run's metrics and artifacts."""

from __future__ import annotations

import itertools
import json
import math

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


@pytest.mark.slow
def test_real_run_logs_curve_and_artifacts(tmp_path):
    from _cli import latest_run, metric_history, rlx

    proc = rlx("run", "--objective", "best-of-n", "--reward", "prm", "--steps", "1", "--set", "run.batch_size=4",
               "--set", "objective.n=4", "--set", "env.eval_size=16", "--set", "run.threads=1", "--no-progress",
               home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    mlflow_id = run["mlflow_run_id"]
    assert client.get_run(mlflow_id).info.status == "FINISHED" and run["status"] == "FINISHED"
    rewards = [metric_history(client, mlflow_id, f"bon/reward_at_{n}")[0].value for n in (1, 2, 4)]
    assert all(a <= b + 1e-9 for a, b in zip(rewards, rewards[1:]))
    for key in ("bon/accuracy_at_4", "bon/kl_bound_at_4", "bon/reward_mean", "reward/mean"):
        assert len(metric_history(client, mlflow_id, key)) == 1, key
    assert not metric_history(client, mlflow_id, "eval/accuracy")  # nothing trained: nothing to evaluate
    artifacts = {a.path for a in client.list_artifacts(mlflow_id)}
    assert {"best_of_n.png", "best_of_n.json"} <= artifacts and "policy" not in artifacts
    assert not (tmp_path / "runs" / run["id"] / "policy").exists() and not run.get("policy_dir")
