"""DPO's losses and f-divergences against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rlx.plugins.dpo.losses import pair_logits, pair_loss

# log pi/pi_ref of a chosen and a rejected completion
LC, LR = 0.3, -0.2


def _logits(divergence: str, alpha: float = 0.5) -> float:
    return float(pair_logits(torch.tensor([LC]), torch.tensor([LR]), divergence, alpha))


def test_divergences_by_hand():
    uc, ur = math.exp(LC), math.exp(LR)
    assert _logits("reverse_kl") == pytest.approx(LC - LR)  # (log uc + 1) - (log ur + 1)
    assert _logits("forward_kl") == pytest.approx(-1 / uc + 1 / ur)
    assert _logits("js") == pytest.approx(math.log(2 * uc / (1 + uc)) - math.log(2 * ur / (1 + ur)))
    assert _logits("alpha", 0.5) == pytest.approx((1 - uc ** -0.5) / 0.5 - (1 - ur ** -0.5) / 0.5)
    # alpha -> 0 tends to reverse KL (f'(u) -> log u)
    assert _logits("alpha", 1e-4) == pytest.approx(LC - LR, rel=1e-3)


def test_loss_types_by_hand():
    h, beta = LC - LR, 0.1
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert float(pair_loss(torch.tensor([h]), "sigmoid", beta)) == pytest.approx(-math.log(sig(beta * h)))
    assert float(pair_loss(torch.tensor([h]), "sigmoid", beta, 0.1)) == pytest.approx(
        -0.9 * math.log(sig(beta * h)) - 0.1 * math.log(sig(-beta * h)))
    assert float(pair_loss(torch.tensor([h]), "hinge", beta)) == pytest.approx(1 - beta * h)
    assert float(pair_loss(torch.tensor([20.0]), "hinge", beta)) == 0.0  # past the margin
    assert float(pair_loss(torch.tensor([h]), "ipo", beta)) == pytest.approx((h - 1 / (2 * beta)) ** 2)


def test_gradients_push_chosen_up_and_rejected_down():
    for div in ("reverse_kl", "forward_kl", "js", "alpha"):
        for loss_type in ("sigmoid", "hinge", "ipo"):
            c, r = torch.tensor([LC], requires_grad=True), torch.tensor([LR], requires_grad=True)
            pair_loss(pair_logits(c, r, div), loss_type, 0.1).sum().backward()
            assert c.grad < 0 < r.grad, (div, loss_type)


def test_large_log_ratios_stay_finite():
    c, r = torch.tensor([-80.0]), torch.tensor([80.0])
    for div in ("forward_kl", "alpha"):
        assert torch.isfinite(pair_loss(pair_logits(c, r, div), "sigmoid")).all()


def test_flawed_solution_has_one_slip_carried_through():
    import random

    from rlx.plugins.arithmetic import problems
    from rlx.plugins.arithmetic.config import ArithmeticConfig

    rng, cfg = random.Random(0), ArithmeticConfig(max_ops=4, ops="+-*")
    for _ in range(200):
        task = problems.make_task(*problems.generate(rng, cfg))
        bad = problems.flawed_solution(task, rng)
        verdicts = problems.check_steps(task["expr"], task["answer"], bad)
        assert problems.final_answer(bad) != task["answer"]  # the slip reaches the answer
        assert not all(v.correct for v in verdicts)
        assert bad.count("\n") == task["solution"].count("\n")  # same shape as the gold solution


def test_each_kind_of_flaw_changes_the_answer():
    import random

    from rlx.plugins.arithmetic import problems
    from rlx.plugins.arithmetic.config import ArithmeticConfig
    from rlx.plugins.preferences.env import PreferencesEnv

    rng, cfg = random.Random(1), ArithmeticConfig(max_ops=4, ops="+-*")
    for _ in range(100):
        task = problems.make_task(*problems.generate(rng, cfg))
        for kind in problems.FLAWS:
            bad = problems.flawed_solution(task, rng, (kind,))
            assert problems.final_answer(bad) != task["answer"], (kind, task["solution"], bad)
            assert not all(v.correct for v in problems.check_steps(task["expr"], task["answer"], bad))
    # the environment draws every kind by default, and only the chosen ones when told
    env = PreferencesEnv({"eval_size": 8}, seed=0)
    assert env.config.flaws == list(problems.FLAWS)
    only = PreferencesEnv({"eval_size": 8, "flaws": "early"}, seed=0)
    shorter = [p["rejected"].count("\n") < p["chosen"].count("\n") for p in only.sample(40)]
    assert sum(shorter) >= 30  # early answers (the rest: an early answer that was right anyway, redrawn as a slip)


def test_preference_pairs_from_files_and_errors(tmp_path):
    import json

    from rlx.errors import UsageError
    from rlx.plugins.preferences.env import PreferencesEnv

    rows = [{"prompt": f"Q{i}", "chosen": "good", "rejected": "bad"} for i in range(10)]
    jl = tmp_path / "p.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    env = PreferencesEnv({"path": str(jl), "eval_size": 3})
    assert len(env.eval_pairs()) == 3 and env.eval_pairs()[0]["prompt"] == "Q7"
    drawn = env.sample(14)  # two shuffled passes over the 7 training pairs
    assert sorted(p["prompt"] for p in drawn[:7]) == [f"Q{i}" for i in range(7)]
    assert env.answer_tasks() is None  # a file's pairs have no checkable answers
    csv = tmp_path / "p.csv"
    csv.write_text("prompt,chosen,rejected\nQ0,a,b\nQ1,,b\nQ2,a,b\n")
    with pytest.raises(UsageError, match=r"p.csv:line 3: field 'chosen'"):
        PreferencesEnv({"path": str(csv), "eval_size": 1})
    bad = tmp_path / "q.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "chosen": "a"}) + "\n")
    with pytest.raises(UsageError, match="no column 'rejected'"):
        PreferencesEnv({"path": str(bad), "eval_size": 1})
    pq = tmp_path / "p.parquet"
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(pq))
    assert len(PreferencesEnv({"path": str(pq), "eval_size": 2}).eval_pairs()) == 2
    with pytest.raises(UsageError, match="not more than env.eval_size"):
        PreferencesEnv({"path": str(jl), "eval_size": 10})


def test_synthetic_pairs_are_deterministic_and_held_out():
    from rlx.plugins.preferences.env import PreferencesEnv

    a, b = PreferencesEnv({"eval_size": 32}, seed=1), PreferencesEnv({"eval_size": 32}, seed=1)
    assert a.eval_pairs() == b.eval_pairs() and a.sample(8) == b.sample(8)
    held = {p["prompt"] for p in a.eval_pairs()}
    assert not held & {p["prompt"] for p in a.sample(200)}
    assert all(p["chosen"] != p["rejected"] for p in a.eval_pairs())


@pytest.mark.slow
def test_dpo_run_on_synthetic_pairs(tmp_path):
    from _cli import latest_run, metric_history, rlx

    proc = rlx("run", "--objective", "dpo", "--env", "preferences", "--steps", "12", "--set", "run.eval_every=6",
               "--set", "env.eval_size=64", "--set", "run.batch_size=16", "--set", "optim.lr=1e-4",
               "--set", "run.threads=1", "--no-progress", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    pref = metric_history(client, run["mlflow_run_id"], "eval/preference_accuracy")
    assert [m.step for m in pref] == [0, 6, 12] and pref[-1].value > 0.6, pref
    acc = metric_history(client, run["mlflow_run_id"], "eval/accuracy")  # arithmetic's generation eval
    assert len(acc) == 3
    data = client.get_run(run["mlflow_run_id"]).data.metrics
    for k in ("loss/dpo", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracy"):
        assert k in data, k
