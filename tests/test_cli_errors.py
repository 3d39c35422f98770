"""Bad input: one line naming the problem and the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import pytest
from _cli import rlx

CASES = [
    # (args, exit code, words the single error line must contain)
    (["run", "--objective", "grpoo"], 2, ["unknown objective 'grpoo'", "did you mean 'grpo'"]),
    (["run", "--set", "objective.loss_type=foo"], 2, ["objective.loss_type", "'grpo'", "'bnpo'", "'dr_grpo'", "'dapo'", "foo"]),
    (["run", "--reward", "prn"], 2, ["unknown reward 'prn'", "did you mean 'prm'"]),
    (["run", "--env", "arith"], 2, ["unknown environment 'arith'", "arithmetic"]),
    (["run", "--policy", "huge"], 2, ["unknown policy 'huge'", "tiny"]),
    (["run", "--set", "objective.beta=-1"], 2, ["objective.beta", "greater than or equal to 0"]),
    (["run", "--set", "objective.num_generations=abc"], 2, ["objective.num_generations", "integer"]),
    (["run", "--set", "objective.bta=0.1"], 2, ["objective.bta", "unknown field", "beta"]),
    (["run", "--set", "env.ops=+/"], 2, ["env.ops", "unsupported operator"]),
    (["run", "--set", "reward.prm.refinement=square"], 2, ["reward.prm.refinement", "'clip'", "'delta'"]),
    (["run", "--set", "run.stepz=3"], 2, ["run.stepz", "unknown field", "steps"]),
    (["run", "--set", "nonsense"], 2, ["--set 'nonsense'", "dotted.key=value"]),
    (["run", "--set", "model.lr=1"], 2, ["unknown section 'model'"]),
    (["run", "--config", "missing.toml"], 2, ["missing.toml", "does not exist"]),
    (["run", "--device", "tpu"], 2, ["run.device", "'auto'", "'cpu'", "'cuda'"]),
    (["runs", "show", "doesnotexist"], 2, ["no run 'doesnotexist'", "rlx runs list"]),
    (["plugins", "show", "grpoo"], 2, ["no plugin or component 'grpoo'", "did you mean 'grpo'"]),
    (["run", "--objective", "sft", "--policy", "hf"], 2, ["policy 'hf' needs a model", "policy.model"]),
    (["run", "--policy", "hf", "--set", "policy.model=/nonexistent/model"], 2, ["cannot load policy.model"]),
]


@pytest.mark.parametrize("args,code,words", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_input(tmp_path, args, code, words):
    proc = rlx(*args, home=tmp_path, timeout=120)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_malformed_toml(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_text("[objective\nname = 'grpo'\n")
    proc = rlx("run", "--config", str(bad), home=tmp_path)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_traceback(tmp_path):
    proc = rlx("run", "--objective", "grpoo", "--debug", home=tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_unwritable_home(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = rlx("run", "--steps", "1", home=blocker / "home", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "RLX_HOME" in proc.stderr
