"""The example third-party plugin (examples/rlx-example-plugin) end to end.

The package is installed with ``pip install --no-deps --no-build-isolation --target``
into a temporary folder, and every CLI call is a subprocess with that folder on
``PYTHONPATH``: ``importlib.metadata`` finds the ``.dist-info`` there, so rlx sees the
entry point exactly as for a normal install, and the project venv is never touched.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import rlx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rlx-example-plugin"
VOCAB = set("0123456789+-*=:QA\n ")

TINY = ["--set", "run.batch_size=2", "--set", "objective.num_generations=2", "--set", "run.eval_every=0",
        "--set", "generation.max_new_tokens=16", "--set", "env.eval_size=8", "--set", "run.save_policy=false",
        "--no-progress"]


def _tiny_policy_args() -> list[str]:
    """Use the shipped tiny checkpoint when it exists, random weights otherwise (the plugin,
    not the checkpoint, is under test here)."""
    from rlx.plugins import tiny

    have = (Path(tiny.__file__).parent / "checkpoint" / "config.json").is_file()
    return [] if have else ["--set", "policy.init=scratch"]


@pytest.fixture(scope="module")
def site(example_site: Path) -> Path:
    """The example package, installed once for the session (conftest)."""
    assert (example_site / "rlx_example_plugin-0.1.0.dist-info" / "entry_points.txt").is_file()
    return example_site


@pytest.fixture(scope="module")
def rlx_home(tmp_path_factory) -> Path:
    # Shared by the runs of this module: creating a fresh MLflow database costs ~10 s.
    return tmp_path_factory.mktemp("rlx_home")


def plugin_rows(home: Path, paths: list[Path], **extra_env: str) -> dict[str, dict]:
    proc = rlx("plugins", "list", "--json", home=home, paths=paths, **extra_env)
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)}


@pytest.fixture()
def broken_site(tmp_path) -> Path:
    """A hand-made distribution whose plugin module raises at import."""
    site = tmp_path / "broken_site"
    site.mkdir()
    (site / "broken_rlx_plugin.py").write_text('raise RuntimeError("boom: broken on purpose")\n')
    dist = site / "broken_rlx_plugin-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-rlx-plugin\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[rlx]\nbroken = broken_rlx_plugin\n")
    return site


# --- a. discovery --------------------------------------------------------------------------


def test_installed_plugin_is_listed(site, tmp_path):
    rows = plugin_rows(tmp_path, [site])
    brevity, countdown = rows["brevity"], rows["countdown"]
    assert brevity | {"description": ""} == {
        "name": "brevity", "kind": "reward", "family": "example", "version": "0.1.0",
        "distribution": "rlx-example-plugin", "status": "ok", "description": ""}
    assert (countdown["kind"], countdown["family"], countdown["version"], countdown["status"]) == (
        "environment", "example", "0.1.0", "ok")
    assert rows["grpo"]["status"] == "ok"  # the built-ins are unaffected


def test_show_lists_config_fields_with_descriptions(site, tmp_path):
    proc = rlx("plugins", "show", "example", "--json", home=tmp_path, paths=[site])
    assert proc.returncode == 0, proc.stderr
    by_name = {c["name"]: c for c in json.loads(proc.stdout)}
    assert by_name["brevity"]["meta"] == {"granularity": "outcome", "kinds": ["text"], "requires": []}
    assert by_name["countdown"]["meta"] == {"kind": "text", "default_reward": "verifier", "task_field": None,
                                            "requires": []}
    fields = {c: {f["field"]: f for f in by_name[c]["fields"]} for c in by_name}
    assert set(fields["brevity"]) == {"weight", "target_length"}
    assert set(fields["countdown"]) == {"max_operand", "num_ops", "eval_size"}
    assert all(f["description"] for c in fields.values() for f in c.values())


def test_registration_is_cheap_and_components_work(site, tmp_path):
    """Importing the plugin (what every rlx command does) must not import torch; the
    components themselves behave as the contract says."""
    code = r"""
import json, sys
import rlx_example_plugin
assert "torch" not in sys.modules, "registration imported torch"
from rlx_example_plugin.env import CountdownEnv
from rlx_example_plugin.config import CountdownConfig, BrevityConfig
assert "torch" not in sys.modules, "the environment imported torch"
env = CountdownEnv(CountdownConfig(eval_size=16), seed=3)
ev = env.eval_tasks()
assert len(ev) == 16 == len({t["prompt"] for t in ev})
assert ev == CountdownEnv(CountdownConfig(eval_size=16), seed=3).eval_tasks()
assert ev != CountdownEnv(CountdownConfig(eval_size=16), seed=4).eval_tasks()
state = env.state_dict(); json.dumps(state)
a = env.sample(20); b = env.sample(5)
env.load_state_dict(state)
assert env.sample(20) == a and env.sample(5) == b
held = {t["prompt"] for t in ev}
vocab = set("0123456789+-*=:QA\n ")
assert not held & {t["prompt"] for t in a + b}
for t in ev + a:
    assert set(t["prompt"]) <= vocab and set(env.demonstration(t)) <= vocab
    assert env.is_correct(t, env.demonstration(t))
    assert not env.is_correct(t, env.demonstration(t).rsplit("A:", 1)[0] + f"A:{t['answer'] + 1}")
    assert t["answer"] == eval(t["expr"]) >= 0
assert not env.is_correct(ev[0], "") and not env.is_correct(ev[0], "A:x")
assert env.is_correct({"answer": 4}, "A:9\nA:4")
try:
    CountdownEnv(CountdownConfig(max_operand=1, num_ops=1, eval_size=50)).eval_tasks()
    raise AssertionError("expected ConfigError")
except Exception as exc:
    assert type(exc).__name__ == "ConfigError", exc
from rlx.batch import Batch
from rlx_example_plugin.reward import Brevity
r = Brevity(BrevityConfig(target_length=4), env=env)
s = r.score(Batch(meta={"completion": ["", "ab", "abcd", "abcdefgh"]}))
assert s.tolist() == [1.0, 0.5, 0.0, 0.0], s
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


# --- b. a real run with the plugin's components ---------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy's, from inside MLflow
def test_run_with_plugin_components_is_tracked(site, rlx_home):
    proc = rlx("run", "--objective", "grpo", "--env", "countdown", "--reward", "brevity", "--reward", "verifier",
               "--steps", "2", *TINY, *_tiny_policy_args(), home=rlx_home, paths=[site])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FINISHED" in proc.stdout
    mlflow_id = re.search(r"mlflow run (\w+) in", proc.stdout).group(1)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{rlx_home}/mlflow.db")
    run = client.get_run(mlflow_id)
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["reward/brevity"] <= 1.0
    assert "reward/verifier" in run.data.metrics
    assert [m.step for m in client.get_metric_history(mlflow_id, "reward/brevity")] == [1, 2]
    assert run.data.tags["rlx.plugin.example"] == "0.1.0"
    assert run.data.tags["rlx.env"] == "countdown"
    assert run.data.params["env.eval_size"] == "8"


# --- c. a broken plugin is reported and does not take the others down -----------------------


def test_broken_plugin_is_reported(site, broken_site, tmp_path):
    rows = plugin_rows(tmp_path, [site, broken_site])
    assert rows["broken"]["status"].startswith("error")
    assert "RuntimeError" in rows["broken"]["status"] and "boom: broken on purpose" in rows["broken"]["status"]
    assert rows["broken"]["version"] == "0.0.1"
    for name in ("grpo", "arithmetic", "verifier", "prm", "tiny", "brevity", "countdown"):
        assert rows[name]["status"] == "ok", rows[name]


@pytest.mark.slow
def test_run_works_next_to_a_broken_plugin(broken_site, rlx_home):
    proc = rlx("run", "--objective", "grpo", "--reward", "verifier", "--steps", "1", *TINY, *_tiny_policy_args(),
               home=rlx_home, paths=[broken_site])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FINISHED" in proc.stdout
    assert "Traceback" not in proc.stderr


# --- d. RLX_DISABLE_PLUGINS -------------------------------------------------------------------


def _disabled_run(site, home):
    proc = rlx("run", "--objective", "grpo", "--env", "arithmetic", "--reward", "brevity", "--steps", "1", *TINY,
               home=home, paths=[site], RLX_DISABLE_PLUGINS="example")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    return proc, errors


def test_disabled_plugin_components_are_unavailable(site, tmp_path):
    rows = plugin_rows(tmp_path, [site], RLX_DISABLE_PLUGINS="example")
    assert "brevity" not in rows and "countdown" not in rows
    assert rows["example"]["status"] == "disabled"
    proc, errors = _disabled_run(site, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(errors) == 1 and "brevity" in errors[0], proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # rejected before anything was built


def test_disabled_plugin_is_named_in_the_error(site, tmp_path):
    proc, errors = _disabled_run(site, tmp_path)
    assert proc.returncode == 2
    assert "disabled" in errors[0] and "example" in errors[0], errors
