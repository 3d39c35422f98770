"""The ``prompts`` environment: files, answers, errors, and an online run on it."""

from __future__ import annotations

import json

import pytest

from rlx.errors import UsageError


def _arithmetic_file(path, n: int) -> None:
    from rlx.plugins.arithmetic.env import ArithmeticEnv

    tasks = ArithmeticEnv({"eval_size": 8}, seed=5).sample(n)
    path.write_text("\n".join(json.dumps({"prompt": t["prompt"], "answer": t["answer"]}) for t in tasks))


def test_prompts_file_answers_and_errors(tmp_path):
    from rlx.plugins.prompts.env import PromptsEnv, final_answer

    assert final_answer("3+4=7\nA: 7 ") == "7" and final_answer(" Paris\n") == "paris"
    f = tmp_path / "p.jsonl"
    _arithmetic_file(f, 30)
    env = PromptsEnv({"path": str(f), "eval_size": 10})
    assert len(env.eval_tasks()) == 10 and env.checks_answers
    task = env.eval_tasks()[0]
    assert env.is_correct(task, f"A:{task['answer']}") and not env.is_correct(task, "A:-1")
    assert sorted(t["id"] for t in env.sample(20)) == list(range(20))  # one shuffled pass over the 20 training rows
    bare = tmp_path / "bare.csv"
    bare.write_text("prompt\nhello\nworld\nagain\n")
    env = PromptsEnv({"path": str(bare), "eval_size": 1})
    assert not env.checks_answers and env.eval_tasks() == []
    with pytest.raises(UsageError, match="no reference answers"):
        env.is_correct(env.sample(1)[0], "x")
    with pytest.raises(UsageError, match="no column 'text'"):
        PromptsEnv({"path": str(bare), "prompt_field": "text", "eval_size": 1})
    with pytest.raises(UsageError, match="is not a file"):
        PromptsEnv({"path": str(tmp_path / "missing.jsonl")})


@pytest.mark.slow
def test_grpo_on_a_prompts_file(tmp_path):
    from _cli import latest_run, metric_history, rlx

    f = tmp_path / "arith.jsonl"
    _arithmetic_file(f, 80)
    proc = rlx("run", "--objective", "grpo", "--env", "prompts", "--set", f"env.path={f}", "--set", "env.eval_size=16",
               "--steps", "2", "--set", "run.batch_size=4", "--set", "run.threads=1", "--no-progress", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    acc = metric_history(client, run["mlflow_run_id"], "eval/accuracy")
    assert [m.step for m in acc] == [0, 2] and acc[0].value > 0.1  # the tiny policy solves some: answers match
    assert len(metric_history(client, run["mlflow_run_id"], "reward/verifier")) == 2
