"""Bad input, table-driven: each case gets one ``error:`` line naming the problem and the
fix, a fitting exit code (2 usage, 3 plugin, 1 run failure), no traceback unless
``--debug``, and nothing recorded earlier is lost (checked at the end against a run
made before all the cases)."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
from _cli import make_plugin, rlx

TINY = ["--steps", "2", "--set", "run.batch_size=1", "--set", "objective.num_generations=2", "--set",
        "env.eval_size=4", "--set", "generation.max_new_tokens=16", "--set", "run.eval_every=0", "--no-progress"]

ODD_PLUGINS = textwrap.dedent('''
    import math, torch
    from rlx.hookspecs import hookimpl
    from rlx.environment import Environment
    from rlx.plugins.arithmetic.env import ArithmeticEnv
    from rlx.plugins.arithmetic.config import ArithmeticConfig
    from rlx.reward import RewardSource

    class Control(Environment):
        def sample(self, n): return []
        def eval_tasks(self): return []

    class Empty(ArithmeticEnv):
        def sample(self, n): return []

    class Raises(RewardSource):
        def score(self, batch): raise RuntimeError("scorer is down")

    class AllNaN(RewardSource):
        def score(self, batch): return torch.full((len(batch),), math.nan)

    class Inf(RewardSource):
        def score(self, batch): return torch.full((len(batch),), math.inf)

    class Huge(RewardSource):  # finite, but the advantages overflow float32
        def score(self, batch): return torch.tensor([3e38 if i % 2 else -3e38 for i in range(len(batch))])

    @hookimpl
    def rlx_register_environments(register):
        register("cartpoleish", Control, kind="control")
        register("empty", Empty, config=ArithmeticConfig, kind="text")

    @hookimpl
    def rlx_register_rewards(register):
        register("raises", Raises)
        register("allnan", AllNaN)
        register("inf", Inf)
        register("huge", Huge)
        register("wrongtype", lambda config, **kw: "not a reward source")
''')


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A home holding one finished run, and a site with odd plugins."""
    root = tmp_path_factory.mktemp("bad")
    home = root / "home"
    home.mkdir()
    site = make_plugin(root / "site", "odd", ODD_PLUGINS)
    # a run name with rich markup in it: `rlx runs show` prints it as text
    done = rlx("run", *TINY, "--experiment", "keep", "--set", "run.name=lr[/0.1]", home=home)
    assert done.returncode == 0, done.stderr
    (root / "dir.toml").mkdir()
    (root / "binary.toml").write_bytes(b"\xff\xfe\x00garbage\x9c")
    (root / "malformed.toml").write_text("[objective\nname = 'grpo'\n")
    (root / "badsection.toml").write_text("[model]\nlr = 1\n")
    (root / "badtype.toml").write_text("[run]\nsteps = 'ten'\n")
    (root / "accel.yaml").write_text("compute_environment: [unclosed\n")
    (root / "deep.toml").write_text("x = " + "[" * 100_000)
    (root / "reward_scalar.toml").write_text("[reward]\nverifier = 3\n")
    (root / "reward_top.toml").write_text("reward = 3\n")
    (root / "empty.jsonl").write_text("")
    (root / "latin1.jsonl").write_bytes('{"prompt": "café 1+1", "answer": "2"}\n'.encode("latin-1"))
    return {"home": home, "site": site, "root": root}


# (id, args, exit code, words the one error line must contain); {root} is the fixture's folder
CASES = [
    ("unknown objective", ["run", "--objective", "grpoo"], 2, ["unknown objective 'grpoo'", "did you mean 'grpo'"]),
    ("bad literal", ["run", "--set", "objective.loss_type=foo"], 2,
     ["objective.loss_type", "'grpo'", "'bnpo'", "'dr_grpo'", "'dapo'", "foo"]),
    ("unknown reward", ["run", "--reward", "prn"], 2, ["unknown reward 'prn'", "did you mean 'prm'"]),
    ("unknown env", ["run", "--env", "arith"], 2, ["unknown environment 'arith'", "arithmetic"]),
    ("unknown policy", ["run", "--policy", "huge"], 2, ["unknown policy 'huge'", "tiny"]),
    ("out of range", ["run", "--set", "objective.beta=-1"], 2, ["objective.beta", "greater than or equal to 0"]),
    ("group too small", ["run", "--set", "objective.num_generations=1"], 2, ["objective.num_generations", "2"]),
    ("wrong type", ["run", "--set", "objective.num_generations=abc"], 2, ["objective.num_generations", "integer"]),
    ("typo in field", ["run", "--set", "objective.bta=0.1"], 2, ["objective.bta", "unknown field", "beta"]),
    ("bad operator", ["run", "--set", "env.ops=+/"], 2, ["env.ops", "unsupported operator"]),
    ("inverted range", ["run", "--set", "env.min_ops=4", "--set", "env.max_ops=2"], 2, ["max_ops", "min_ops"]),
    ("bad refinement", ["run", "--set", "reward.prm.refinement=square"], 2, ["reward.prm.refinement", "'clip'"]),
    ("unknown run field", ["run", "--set", "run.stepz=3"], 2, ["run.stepz", "unknown field", "steps"]),
    ("negative steps", ["run", "--set", "run.steps=-3"], 2, ["run.steps", "greater than or equal to 0"]),
    ("malformed --set", ["run", "--set", "nonsense"], 2, ["--set 'nonsense'", "dotted.key=value"]),
    ("unknown section", ["run", "--set", "model.lr=1"], 2, ["unknown section 'model'"]),
    ("bad device", ["run", "--device", "tpu"], 2, ["run.device", "'cpu'", "'cuda'"]),
    ("unknown flag", ["run", "--stepz", "3"], 2, ["No such option: --stepz", "--steps"]),
    ("flag type", ["run", "--steps", "abc"], 2, ["--steps", "integer"]),
    ("missing config", ["run", "--config", "missing.toml"], 2, ["missing.toml", "does not exist"]),
    ("config is a dir", ["run", "--config", "{root}/dir.toml"], 2, ["is a directory"]),
    ("unreadable config", ["run", "--config", "{root}/binary.toml"], 2, ["cannot read config file"]),
    ("malformed TOML", ["run", "--config", "{root}/malformed.toml"], 2, ["not valid TOML"]),
    ("TOML section", ["run", "--config", "{root}/badsection.toml"], 2, ["unknown section 'model'"]),
    ("TOML type", ["run", "--config", "{root}/badtype.toml"], 2, ["run.steps", "integer", "ten"]),
    ("hf without model", ["run", "--objective", "sft", "--policy", "hf"], 2, ["policy 'hf' needs a model"]),
    ("hf missing dir", ["run", "--policy", "hf", "--set", "policy.model=/nonexistent/model"], 2,
     ["cannot load policy.model"]),
    ("tiny missing dir", ["run", "--set", "policy.path=/nonexistent", *TINY], 2, ["no tiny checkpoint"]),
    ("kind mismatch", ["run", "--objective", "grpo", "--env", "cartpoleish", "--reward", "verifier"], 2,
     ["does not accept control environments", "cartpoleish"]),
    ("empty dataset", ["run", "--env", "empty", "--reward", "verifier", *TINY], 1, ["gave 0 tasks", "empty"]),
    ("reward raises", ["run", "--reward", "raises", *TINY], 1, ["failed", "scorer is down"]),
    ("reward all NaN", ["run", "--reward", "allnan", "--set", "run.on_nonfinite=stop", *TINY], 1,
     ["non-finite value at step 1", "reward 'allnan' returned NaN for every sample", "on_nonfinite=skip"]),
    ("reward Inf", ["run", "--reward", "inf", "--set", "run.on_nonfinite=stop", *TINY], 1,
     ["non-finite value at step 1", "Inf or NaN"]),
    ("exploding update", ["run", "--reward", "huge", "--set", "objective.scale_rewards=none", "--set",
                          "run.on_nonfinite=stop", *TINY], 1, ["non-finite value at step", "NaN or Inf", "optim.lr"]),
    ("disabled plugin", ["run", "--reward", "prm"], 2, ["prm", "disabled"]),
    ("show unknown run", ["runs", "show", "doesnotexist"], 2, ["no run 'doesnotexist'", "rlx runs list"]),
    ("resume unknown run", ["runs", "resume", "doesnotexist"], 2, ["no run 'doesnotexist'"]),
    ("show unknown plugin", ["plugins", "show", "grpoo"], 2, ["no plugin, component or core section 'grpoo'", "'grpo'"]),
    ("accelerate config missing", ["run", "--num-processes", "2", "--accelerate-config", "nope.yaml"], 2,
     ["nope.yaml", "does not exist"]),
    ("accelerate config malformed", ["run", "--accelerate-config", "{root}/accel.yaml"], 2, ["not valid YAML"]),
    ("zero processes", ["run", "--num-processes", "0"], 2, ["--num-processes"]),
    # --dry-run: where a check is missing, the case ends at once instead of training
    ("negative seed", ["run", "--seed", "-1", "--dry-run"], 2, ["run.seed", "0 to 4294967295", "got -1"]),
    ("huge seed", ["run", "--seed", "99999999999999999999", "--dry-run"], 2, ["run.seed", "0 to 4294967295"]),
    ("reward not a table", ["run", "--set", "reward.verifier=1", "--dry-run"], 2,
     ["reward.verifier must be a table", "--set reward.verifier.weight=1"]),
    ("TOML reward scalar", ["run", "--config", "{root}/reward_scalar.toml", "--dry-run"], 2,
     ["reward_scalar.toml", "reward.verifier must be a table", "[reward.verifier]"]),
    ("TOML reward top-level scalar", ["run", "--config", "{root}/reward_top.toml", "--dry-run"], 2,
     ["reward_top.toml", "'reward' must be a table", "int 3"]),
    ("TOML nested too deep", ["run", "--config", "{root}/deep.toml", "--dry-run"], 2,
     ["deep.toml", "not valid TOML", "nest too deeply"]),
    ("empty experiment", ["run", "--experiment", "", "--dry-run"], 2, ["run.experiment", "needs a name"]),
    ("experiment path", ["run", "--experiment", "../../x", "--dry-run"], 2,
     ["run.experiment", "'..' are not experiment names"]),
    ("experiment absolute path", ["run", "--experiment", "/abs/dir", "--dry-run"], 2,
     ["run.experiment", "not a path", "'/' may only separate folder names"]),
    ("experiment too long", ["run", "--experiment", "x" * 300, "--dry-run"], 2,
     ["run.experiment", "at most 200 bytes"]),
    ("run name too long", ["run", "--set", "run.name=" + "n" * 300, "--dry-run"], 2, ["run.name", "250 characters"]),
    ("lr inf", ["run", "--set", "optim.lr=inf", "--dry-run"], 2, ["optim.lr: must be a finite number (got inf)"]),
    ("lr nan", ["run", "--set", "optim.lr=nan", "--dry-run"], 2, ["optim.lr: must be a finite number (got nan)"]),
    ("lr too large", ["run", "--set", "optim.lr=1e39", "--dry-run"], 2, ["optim.lr", "less than or equal to 1"]),
    ("plugin field inf", ["run", "--set", "objective.beta=inf", "--dry-run"], 2,
     ["objective.beta: must be a finite number (got inf)"]),
    ("empty prompts file", ["run", "--env", "prompts", "--set", "env.path={root}/empty.jsonl", "--reward", "verifier",
                            *TINY], 2, ["empty.jsonl", "is empty"]),
    ("non-UTF-8 prompts file", ["run", "--env", "prompts", "--set", "env.path={root}/latin1.jsonl", "--reward",
                                "verifier", *TINY], 2, ["latin1.jsonl", "not UTF-8", "line 1"]),
    ("empty preferences file", ["run", "--objective", "dpo", "--env", "preferences", "--set",
                                "env.path={root}/empty.jsonl", "--steps", "1", "--no-progress"], 2,
     ["empty.jsonl", "is empty"]),
    ("factory returns wrong type", ["run", "--reward", "wrongtype", *TINY], 3,
     ["plugin 'odd'", "reward 'wrongtype'", "returned str", "rlx.reward.RewardSource", "RLX_DISABLE_PLUGINS=odd"]),
    ("bad RLX_DB_TIMEOUT", ["runs", "list"], 2, ["RLX_DB_TIMEOUT='soon'", "number of seconds"]),
    ("negative --limit", ["runs", "list", "--limit", "-1"], 2, ["--limit", "1"]),
    ("bad --status", ["runs", "list", "--status", "BOGUS"], 2,
     ["'BOGUS'", "RUNNING, FINISHED, FAILED, KILLED, CRASHED"]),
    ("run id %", ["runs", "show", "%"], 2, ["no run '%'", "hex digits"]),
    ("run id _", ["runs", "show", "_"], 2, ["no run '_'", "hex digits"]),
]
ENV = {"disabled plugin": {"RLX_DISABLE_PLUGINS": "prm"}, "bad RLX_DB_TIMEOUT": {"RLX_DB_TIMEOUT": "soon"}}


@pytest.mark.parametrize("name,args,code,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, name, args, code, words):
    args = [a.replace("{root}", str(world["root"])) for a in args]
    proc = rlx(*args, home=world["home"], paths=[world["site"]], timeout=300, **ENV.get(name, {}))
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])


def test_show_prints_markup_as_text(world):
    """`rlx runs show` of the run named ``lr[/0.1]``: rich must not read it as a closing tag."""
    runs = json.loads(rlx("runs", "list", "--json", home=world["home"]).stdout)
    kept = [r for r in runs if r["experiment"] == "keep"][0]
    assert kept["name"] == "lr[/0.1]"
    proc = rlx("runs", "show", kept["id"], home=world["home"])
    assert proc.returncode == 0, proc.stderr
    assert "lr[/0.1]" in proc.stdout.splitlines()[0] and "Traceback" not in proc.stderr


def test_at_least_25_cases():
    assert len(CASES) >= 25


def test_debug_shows_traceback(world):
    proc = rlx("run", "--objective", "grpoo", "--debug", home=world["home"])
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_unwritable_home(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = rlx("run", *TINY, home=blocker / "home", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "RLX_HOME" in errors[0]


def test_locked_catalog(world):
    con = sqlite3.connect(world["home"] / "catalog.db", isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        proc = rlx("runs", "list", home=world["home"], RLX_DB_TIMEOUT="1")
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "locked by another process" in proc.stderr and "RLX_DB_TIMEOUT" in proc.stderr


def test_resume_without_checkpoint(world):
    killer = make_plugin(world["root"] / "killer", "killer", textwrap.dedent('''
        import os, signal
        from rlx.hookspecs import hookimpl
        @hookimpl
        def rlx_step_end(step):
            os.kill(os.getpid(), signal.SIGKILL)
    '''))
    proc = rlx("run", *TINY, "--experiment", "dies", home=world["home"], paths=[killer])
    assert proc.returncode == -9
    runs = [r for r in json.loads(rlx("runs", "list", "--json", home=world["home"]).stdout) if r["experiment"] == "dies"]
    assert runs[0]["status"] == "CRASHED"
    proc = rlx("runs", "resume", runs[0]["id"], home=world["home"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no checkpoint" in proc.stderr and "rlx run" in proc.stderr


def test_nothing_recorded_earlier_is_lost(world):
    """Runs after every case above: the run made first is intact in the catalog and MLflow."""
    runs = json.loads(rlx("runs", "list", "--json", "--limit", "500", home=world["home"]).stdout)
    kept = [r for r in runs if r["experiment"] == "keep"]
    assert len(kept) == 1 and kept[0]["status"] == "FINISHED"
    assert (Path(kept[0]["policy_dir"]) / "model.safetensors").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{world['home']}/mlflow.db")
    assert client.get_run(kept[0]["mlflow_run_id"]).info.status == "FINISHED"
    failed = {r["experiment"]: r["status"] for r in runs if r["status"] == "FAILED"}
    assert failed  # the failing runs are recorded as FAILED, not lost and not FINISHED
