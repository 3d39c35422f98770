"""Bad sweep specs and requests: one line naming the problem and the fix, exit 2, and
nothing started or recorded (no sweep folder, no catalog row, no MLflow run)."""

from __future__ import annotations

import pytest
from _cli import rlx

SPEC_OK = '''
seeds = 2
[base]
env = "gym"
run = { steps = 1 }
[axes]
"objective" = ["ppo", "dqn"]
'''

CASES = {
    "unknown top-level key": ('seeds = 2\nsedes = 3\n', [], "unknown key 'sedes'"),
    "not TOML": ('seeds = [1, 2\n', [], "not valid TOML"),
    "seed as an axis": ('[axes]\n"run.seed" = [1, 2]\n', [], "seeds are the sweep's"),
    "duplicate seed": ('seeds = [1, 1]\n', [], "seed 1 is listed twice"),
    "unknown field in a cell": ('[axes]\n"objective.betta" = [0.1]\n', [],
                                "objective.betta: unknown field"),
    "bad value in one cell": ('[base]\nobjective = "grpo"\n[axes]\n"objective.loss_type" = ["grpo", "nope"]\n', [],
                              "sweep cell 'objective.loss_type=nope'"),
    "unknown objective in an axis": ('[axes]\nobjective = ["grpo", "grpp"]\n', [], "did you mean 'grpo'"),
    "objective that rejects the env": ('[base]\nenv = "gym"\n[axes]\nobjective = ["ppo", "dpo"]\n', [],
                                       "does not accept control environments"),
    "empty axis": ('[axes]\n"objective.beta" = []\n', [], "non-empty list"),
    "unknown launcher": (SPEC_OK, ["--launcher", "slurmz"], "unknown launcher 'slurmz'"),
    "bad launcher setting": (SPEC_OK, ["--set", "launcher.threads_per_runn=1"], "launcher.threads_per_runn"),
    "max_parallel zero in spec": ('max_parallel = 0\n', [], "max_parallel must be a whole number"),
    "run seed flag": (SPEC_OK, ["--", "--seed", "3"], "seeds are the sweep's"),
    "unknown run flag": (SPEC_OK, ["--", "--stepz", "3"], "No such option"),
    "spec and axis flags": (SPEC_OK, ["--objective", "ppo,dqn"], "exclude each other"),
    "too many runs": ('seeds = 200\n[axes]\n"objective.beta" = ' + str([i / 100 for i in range(60)]) + '\n', [],
                      "over the limit"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_spec_is_one_line_and_starts_nothing(tmp_path, name):
    text, extra, words = CASES[name]
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    home = tmp_path / "home"
    proc = rlx("sweep", str(spec), "--no-live", *extra, home=home, cwd=tmp_path)
    assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (name, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not (home / "sweeps").exists() and not (home / "mlflow.db").exists(), name


@pytest.mark.parametrize("args,words", [
    (["resume", "abc"], "no sweep 'abc' in the catalog"),
    (["resume", "xyz!"], "sweep ids are 12 hex digits"),
    (["resume"], "takes one sweep id"),
    (["show", "00"], "no sweep '00'"),
    (["missing.toml"], "does not exist"),
    ([], "nothing to sweep"),
    (["--seeds", "0-2", "--grid", "objective.beta"], "not of the form key=v1,v2"),
    (["--objective", "ppo,,dqn", "--env", "gym"], "an empty name"),
    (["a.toml", "b.toml"], "one spec file"),
    (["--objective", "ppo,dqn", "--env", "gym", "--retry-failed"], "--retry-failed is for rlx sweep resume"),
    (["--objective", "ppo,dqn", "--env", "gym", "--", "--num-processes", "2"], "one process each"),
])
def test_bad_requests(tmp_path, args, words):
    proc = rlx("sweep", *args, home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 2, (args, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], (args, proc.stderr)
    assert not (tmp_path / "home" / "sweeps").exists()


def test_dry_run_validates_and_records_nothing(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC_OK)
    proc = rlx("sweep", str(spec), "--dry-run", home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4 runs = 2 cells x 2 seeds (0, 1) on launcher 'local'" in proc.stdout
    assert "objective=ppo" in proc.stdout and "objective=dqn" in proc.stdout
    assert not (tmp_path / "home" / "sweeps").exists()
