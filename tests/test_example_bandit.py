"""The example package's ``bandit`` kind end to end: a kind rlx does not know, with its own
environment, policy, reward and objective, trained and evaluated by ``rlx run``.

As in test_example_plugin.py, the package is installed with ``pip install --target`` into
a temporary folder and every CLI call is a subprocess with that folder on PYTHONPATH.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import rlx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rlx-example-plugin"


@pytest.fixture(scope="module")
def site(example_site: Path) -> Path:
    """The example package, installed once for the session (conftest)."""
    return example_site


def test_kind_and_its_components_are_listed(site, tmp_path):
    proc = rlx("plugins", "list", "--json", home=tmp_path, paths=[site])
    assert proc.returncode == 0, proc.stderr
    rows = {(r["name"], r["kind"]): r for r in json.loads(proc.stdout)}
    for key in [("bandit", "kind"), ("bandit", "environment"), ("softmax-arms", "policy"),
                ("gradient-bandit", "objective"), ("payout", "reward")]:
        assert key in rows, sorted(rows)
        assert (rows[key]["family"], rows[key]["status"]) == ("example", "ok"), rows[key]
    proc = rlx("plugins", "show", "bandit", "--json", home=tmp_path, paths=[site])
    assert proc.returncode == 0, proc.stderr
    kind = next(c for c in json.loads(proc.stdout) if c["kind"] == "kind")
    expected = {"interface": "bandit", "data": ["rollouts"], "default_policy": "softmax-arms", "default_env": "bandit",
                "default_objective": "gradient-bandit", "headline": ["eval/optimal_arm_prob", "eval/regret"]}
    assert {k: kind["meta"].get(k) for k in expected} == expected, kind["meta"]


@pytest.mark.parametrize("args", [["--objective", "gradient-bandit"], ["--env", "bandit"]])
def test_defaults_come_from_the_registrations(site, tmp_path, args):
    """Either name alone completes the run: the kind names env, policy and objective, the
    environment its reward, the objective its run settings."""
    proc = rlx("run", *args, "--dry-run", home=tmp_path, paths=[site])
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert [cfg[s]["name"] for s in ("objective", "env", "policy")] == ["gradient-bandit", "bandit", "softmax-arms"]
    assert list(cfg["reward"]) == ["payout"]
    assert (cfg["run"]["steps"], cfg["run"]["batch_size"], cfg["optim"]["lr"]) == (100, 32, 0.05)


def test_components_keep_their_contract(site, tmp_path):
    """Registration imports no torch; the environment is a function of its seeds; the
    policy's log-probs have the kind's shape; the objective's gradient favours the arm
    that paid above the baseline. Then rlx.testing's conformance suites, the checks the
    loop's use of each component implies, for a kind rlx does not know. (One subprocess,
    which discovers the installed package; torch is imported once.)"""
    code = r"""
import sys
import rlx_example_plugin
assert "torch" not in sys.modules, "registration imported torch"
from rlx_example_plugin.bandit.config import BanditConfig, GradientBanditConfig, SoftmaxArmsConfig
from rlx_example_plugin.bandit.env import GaussianBandit
assert "torch" not in sys.modules, "the environment imported torch"
env = GaussianBandit(BanditConfig(arms=4), seed=1)
def means(seed, **config):
    return GaussianBandit(BanditConfig(arms=4, **config), seed=seed).means()
assert env.means() == means(1) != means(2)
assert means(1, means_seed=7) == means(2, means_seed=7)  # one bandit for runs of several seeds
assert env.pull([0, 3, 3], seed=5) == env.pull([0, 3, 3], seed=5) != env.pull([0, 3, 3], seed=6)
assert GaussianBandit(BanditConfig(arms=4, noise=0), seed=1).pull([2], seed=9) == [env.means()[2]]
try:
    env.pull([4], seed=0)
    raise AssertionError("expected RlxError")
except Exception as exc:
    assert type(exc).__name__ == "RlxError", exc
import torch
from rlx.batch import Batch
from rlx_example_plugin.bandit.objective import GradientBandit
from rlx_example_plugin.bandit.policy import SoftmaxArms
policy = SoftmaxArms(SoftmaxArmsConfig(), env=env)
assert torch.allclose(policy.arm_probs(), torch.full((4,), 0.25))
batch = Batch({"actions": torch.tensor([[1], [2]]), "mask": torch.ones(2, 1),
               "rewards": torch.tensor([[1.0], [0.0]]), "reward_mask": torch.ones(2, 1, dtype=torch.bool)})
logp, ent = policy.log_probs(batch, entropy=True)
assert logp.shape == ent.shape == (2, 1)
objective = GradientBandit(GradientBanditConfig(baseline="batch"))
assert objective.prepare(batch, policy, None) == {"objective/baseline": 0.5}
loss, metrics = objective.loss(policy, batch)
assert loss.dim() == 0 and torch.isfinite(loss) and set(metrics) == {"loss/policy", "policy/entropy"}
loss.backward()
grad = policy.model.logits.grad
assert grad[1] < 0 < grad[2], grad  # gradient descent raises arm 1 (paid 1) and lowers arm 2 (paid 0)
from rlx.testing import check_environment, check_kind, check_objective, check_policy, check_reward
for check, name in [(check_environment, "bandit"), (check_reward, "payout"), (check_policy, "softmax-arms"),
                    (check_objective, "gradient-bandit"), (check_kind, "bandit")]:
    check(name)
print("ok")
"""
    env = dict(os.environ, RLX_HOME=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def _means(site: Path, seed: int) -> list[float]:
    """The default bandit's arm means for ``seed``, from the installed package (in a
    subprocess: its .dist-info must not reach this process's plugin discovery)."""
    code = ("import json; from rlx_example_plugin.bandit.env import GaussianBandit; "
            f"print(json.dumps(GaussianBandit(None, seed={seed}).means()))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_gradient_bandit_learns_the_best_arm(site, tmp_path):
    """``--objective gradient-bandit`` alone: the kind picks env and policy, the objective's
    defaults the rest (100 steps of 32 pulls, 10 arms, seed 0). Untracked: MLflow would
    triple the time, and the metrics are in the end line and the catalog."""
    proc = rlx("run", "--objective", "gradient-bandit", "--no-progress", "--no-tracking", home=tmp_path, paths=[site])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"run (\w+) FINISHED: (.*)", proc.stdout)
    assert found, proc.stdout
    shown = {k: float(v) for k, v in (item.split("=") for item in found.group(2).split(", "))}
    assert list(shown) == ["eval/optimal_arm_prob", "eval/regret", "reward/mean"]  # the kind's headline, then the objective's

    means = _means(site, seed=0)
    uniform_regret = max(means) - sum(means) / len(means)  # where training starts: the uniform policy
    assert shown["eval/optimal_arm_prob"] > 0.6, shown  # from 1/10; measured 0.975
    assert shown["eval/regret"] < 0.3 * uniform_regret, (shown, uniform_regret)  # measured 2.905 -> 0.065
    assert shown["reward/mean"] > sum(means) / len(means), shown  # the last batch paid above the uniform mean

    runs = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)
    assert runs[0]["id"] == found.group(1) and runs[0]["status"] == "FINISHED"
    last = runs[0]["metrics"]
    assert last["eval/greedy_regret"] == 0.0  # the most likely arm is the best one
    for key in ("loss/policy", "policy/entropy", "objective/baseline", "env/optimal_pulls", "reward/payout"):
        assert math.isfinite(last[key]), key
    saved = json.loads((Path(runs[0]["policy_dir"]) / "policy.json").read_text())
    assert saved["arms"] == 10 and sum(saved["probs"]) == pytest.approx(1.0)
    assert max(range(10), key=saved["probs"].__getitem__) == max(range(10), key=means.__getitem__)


@pytest.mark.parametrize("args, words", [
    (["--objective", "grpo", "--env", "bandit"], "does not accept bandit environments"),
    (["--objective", "gradient-bandit", "--env", "arithmetic"], "does not accept text environments"),
    (["--objective", "gradient-bandit", "--policy", "tiny"], "need a 'bandit' policy such as --policy softmax-arms"),
])
def test_mismatches_fail_in_one_line(site, tmp_path, args, words):
    proc = rlx("run", *args, "--steps", "1", "--no-progress", home=tmp_path, paths=[site])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was built
