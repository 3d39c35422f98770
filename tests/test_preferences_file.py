"""``preferences`` built from a pairs file: no arithmetic behind it, so no answer checker
and no generation evaluation; a run on it measures the objective's held-out preference
accuracy instead (the README's ``--set env.path=pairs.jsonl`` command used to crash at
step 1 asking a missing checker whether a completion was correct)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlx.plugins.preferences.env import PreferencesEnv


def _pairs(path: Path, n: int = 12) -> Path:
    # arithmetic-looking text, so the tiny policy's char-level vocabulary covers it
    rows = [{"prompt": f"Q:{a}+{a + 3}\n", "chosen": f"A:{2 * a + 3}", "rejected": f"A:{2 * a + 4}"}
            for a in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_file_pairs_have_no_checker_and_synthetic_ones_do(tmp_path):
    env = PreferencesEnv({"path": str(_pairs(tmp_path / "pairs.jsonl")), "eval_size": 4})
    # what the preference kind asks for an accuracy evaluation
    assert env.answer_tasks() is None and len(env.eval_pairs()) == 4
    synthetic = PreferencesEnv({"eval_size": 4}, seed=0).answer_tasks()
    assert synthetic is not None and synthetic.checks_answers and len(synthetic.eval_tasks()) == 4
    task = synthetic.eval_tasks()[0]
    assert synthetic.is_correct(task, task["solution"])
    assert not synthetic.is_correct(task, PreferencesEnv({"eval_size": 4}, seed=0).eval_pairs()[0]["rejected"])


@pytest.mark.slow
def test_dpo_run_on_a_pairs_file(tmp_path):
    from _cli import latest_run, metric_history, rlx

    _pairs(tmp_path / "pairs.jsonl")
    # README.md's command (relative path: the CLI runs in tmp_path), at toy size
    proc = rlx("run", "--objective", "dpo", "--env", "preferences", "--set", "env.path=pairs.jsonl",
               "--set", "objective.loss_type=ipo",
               "--steps", "2", "--set", "run.batch_size=2", "--set", "env.eval_size=4", "--set", "run.threads=1",
               "--no-progress", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "FINISHED" in proc.stdout, proc.stdout
    run, client = latest_run(tmp_path)
    assert run["status"] == "FINISHED" and run["env"] == "preferences"
    pref = metric_history(client, run["mlflow_run_id"], "eval/preference_accuracy")
    assert [m.step for m in pref] == [0, 2] and all(0 <= m.value <= 1 for m in pref), pref
    # no generation evaluation: a file's pairs have no answers to check
    assert not metric_history(client, run["mlflow_run_id"], "eval/accuracy")
