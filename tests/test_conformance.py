"""rlx.testing: every registered component passes its conformance suite, the suites catch
broken components (each kind of check fails on a component built to fail it), and the
``rlx_run`` fixture trains in-process."""

from __future__ import annotations

import json
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

from rlx.registry import get_registry
from rlx.testing import (
    ConformanceError,
    check_environment,
    check_kind,
    check_objective,
    check_policy,
    check_reward,
    run,
)

REG = get_registry()


def _tiny_checkpoint() -> Path:
    from rlx.plugins.tiny.policy import CHECKPOINT

    return CHECKPOINT


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q:{i}+{i % 7}\n", "answer": str(i + i % 7)}) + "\n"
                            for i in range(24)))
    return path


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    """A one-label sequence classifier warm-started from the tiny policy: what ``orm`` loads."""
    from rlx.plugins.shared.scorers import classifier_from_lm
    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    have = (_tiny_checkpoint() / "config.json").is_file()
    tiny = TinyPolicy(TinyConfig() if have else TinyConfig(init="scratch"))
    folder = tmp_path_factory.mktemp("orm") / "model"
    classifier_from_lm(tiny.model, tiny.tokenizer, "sequence").save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return folder


# settings a built-in cannot run without (a data file, a model folder, ensemble members);
# every other registered component runs on its defaults
def _settings(kind: str, name: str, request: pytest.FixtureRequest) -> dict:
    if (kind, name) == ("environment", "prompts"):
        return {"path": str(request.getfixturevalue("prompts_file")), "eval_size": 4}
    if (kind, name) == ("policy", "hf"):
        return {"model": str(_tiny_checkpoint())}
    if (kind, name) == ("reward", "orm"):
        return {"model": str(request.getfixturevalue("reward_model"))}
    if (kind, name) == ("reward", "ensemble"):
        return {"models": [str(request.getfixturevalue("reward_model"))], "sources": ["verifier", "length"]}
    return {}


@pytest.mark.parametrize("name", REG.names("environment"))
def test_environment_conforms(name, request):
    assert "state round trip" in check_environment(name, _settings("environment", name, request))


@pytest.mark.parametrize("name", REG.names("reward"))
def test_reward_conforms(name, request):
    assert "combine" in check_reward(name, _settings("reward", name, request))


@pytest.mark.parametrize("name,env", [(n, None) for n in REG.names("objective")] + [("ppo", "gym")])
def test_objective_conforms(name, env, request):
    passed = check_objective(name, _settings("objective", name, request), env=env)
    produces = REG.get("objective", name).meta["produces"]
    assert ("gradients" in passed) == (produces != "nothing") and "state round trip" in passed


@pytest.mark.parametrize("name", REG.names("policy"))
def test_policy_conforms(name, request):
    assert "reference frozen" in check_policy(name, _settings("policy", name, request))


@pytest.mark.parametrize("name", REG.names("kind"))
def test_kind_conforms(name):
    assert "deterministic collect" in check_kind(name)


def test_every_component_kind_is_covered():
    assert {k: bool(REG.names(k)) for k in ("environment", "reward", "objective", "policy", "kind")} == dict.fromkeys(
        ("environment", "reward", "objective", "policy", "kind"), True)


# -- the suites catch broken components --------------------------------------------------

REGISTRATION = '''
from rlx.hookspecs import hookimpl
from rlx.plugins.arithmetic.config import ArithmeticConfig
from rlx.plugins.dqn.config import DQNConfig
from rlx.plugins.grpo.config import GRPOConfig
from rlx.plugins.tiny.config import TinyConfig
from rlx.reward import RewardConfig


class Undocumented(RewardConfig):
    bonus: float = 1.0


IMPL = "rlxbroken_impl:"


@hookimpl
def rlx_register_environments(register):
    register("bx_flaky", IMPL + "Flaky", config=ArithmeticConfig, kind="text", default_reward="verifier")
    register("bx_forgetful", IMPL + "Forgetful", config=ArithmeticConfig, kind="text", default_reward="verifier")
    register("bx_shuffled_env", "rlx.plugins.arithmetic.env:ArithmeticEnv", config=ArithmeticConfig,
             kind="bx_shuffled", default_reward="bx_verifier")


@hookimpl
def rlx_register_rewards(register):
    register("bx_wrong_shape", IMPL + "WrongShape", granularity="outcome")
    register("bx_infinite", IMPL + "Infinite", granularity="outcome")
    register("bx_per_token", IMPL + "PerToken", granularity="outcome")
    register("bx_undocumented", IMPL + "Zero", config=Undocumented)
    # the built-in verifier scores text batches only: the same class, for any kind
    register("bx_verifier", "rlx.plugins.verifier.reward:Verifier", granularity="outcome")


@hookimpl
def rlx_register_objectives(register):
    register("bx_nan_loss", IMPL + "NanLoss", config=GRPOConfig)
    register("bx_bad_metric", IMPL + "BadMetric", config=GRPOConfig)
    register("bx_detached", IMPL + "Detached", config=GRPOConfig)
    register("bx_grpo", "rlx.plugins.grpo.objective:GRPO", config=GRPOConfig, accepts=("bx_shuffled",))
    register("bx_hand_off", IMPL + "HandOff", config=DQNConfig, accepts=("control",))


@hookimpl
def rlx_register_policies(register):
    register("bx_shared_reference", IMPL + "SharedReference", config=TinyConfig)


@hookimpl
def rlx_register_kinds(register):
    register("bx_shuffled", IMPL + "Shuffled", data=("rollouts",), default_policy="tiny",
             default_env="bx_shuffled_env")
'''

IMPLEMENTATION = '''
import copy
import random

import torch

from rlx.plugins.arithmetic.env import ArithmeticEnv
from rlx.plugins.dqn.objective import DQN
from rlx.plugins.grpo.objective import GRPO
from rlx.plugins.text.kinds import TextKind
from rlx.plugins.tiny.policy import TinyPolicy
from rlx.reward import RewardSource


class Flaky(ArithmeticEnv):  # ignores the seed it is given
    def __init__(self, config=None, *, seed=0):
        super().__init__(config, seed=random.Random().randrange(10**9))


class Forgetful(ArithmeticEnv):  # its state_dict forgets the RNG
    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class WrongShape(RewardSource):
    def score(self, batch):
        return torch.zeros(len(batch) + 1)


class Infinite(RewardSource):
    def score(self, batch):
        return torch.full((len(batch),), float("inf"))


class PerToken(RewardSource):  # a process-shaped score under an outcome registration
    def score(self, batch):
        return torch.zeros(batch["mask"].shape)


class Zero(RewardSource):
    def score(self, batch):
        return torch.zeros(len(batch))


class NanLoss(GRPO):
    def loss(self, policy, batch):
        loss, metrics = super().loss(policy, batch)
        return loss * float("nan"), metrics


class BadMetric(GRPO):
    def loss(self, policy, batch):
        loss, metrics = super().loss(policy, batch)
        return loss, {"entropy": 0.5}


class Detached(GRPO):
    def loss(self, policy, batch):
        loss, metrics = super().loss(policy, batch)
        return loss.detach(), metrics


class HandOff(DQN):  # its hand-written gradients are 1% off those of its loss
    def gradients(self, policy, batch):
        written = super().gradients(policy, batch)
        for p in policy.model.parameters():
            if p.grad is not None:
                p.grad.mul_(1.01)
        return written


class SharedReference(TinyPolicy):  # a "copy" that shares the model, so it trains along
    def reference(self):
        ref = copy.copy(self)
        for p in ref.model.parameters():
            p.requires_grad_(False)
        return ref


class Shuffled(TextKind):  # reorders rows with an unseeded RNG
    def collect(self, step):
        batch = super().collect(step)
        order = list(range(len(batch)))
        random.Random().shuffle(order)
        return batch.select(order)
'''

HEAVY = '''
import torch  # noqa: F401  the mistake under test

from rlx.hookspecs import hookimpl
from rlx.plugins.length.config import LengthConfig


@hookimpl
def rlx_register_rewards(register):
    register("bx_heavy", "rlx.plugins.length.reward:Length", config=LengthConfig)
'''


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A registry holding the built-ins plus two broken plugins (``rlxbroken_reg``, whose
    components each break one check, and ``rlxbroken_heavy``, whose registration imports
    torch), entered through entry points as an installed plugin would be."""
    from rlx.registry.plugins import Registry

    root = tmp_path_factory.mktemp("broken_plugins")
    for module, source in (("rlxbroken_reg", REGISTRATION), ("rlxbroken_impl", IMPLEMENTATION),
                           ("rlxbroken_heavy", HEAVY)):
        (root / f"{module}.py").write_text(source)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        eps = [*entry_points(group="rlx"), EntryPoint("rlxbroken", "rlxbroken_reg", "rlx"),
               EntryPoint("rlxheavy", "rlxbroken_heavy", "rlx")]
        registry = Registry(eps, disabled=set())
        assert registry.plugins["rlxbroken"].status == "ok", registry.plugins["rlxbroken"].error
        yield registry
    sys.modules.pop("rlxbroken_impl", None)


@pytest.fixture
def use_broken(broken, monkeypatch):
    import rlx.registry.plugins as plugins

    monkeypatch.setattr(plugins, "_registry", broken)
    return broken


def _fails(check, *args, **kwargs) -> str:
    with pytest.raises(ConformanceError) as info:
        check(*args, **kwargs)
    return str(info.value)


# each broken component and the start of the failure it must get
BROKEN = [
    ((check_environment, "bx_flaky"), "environment 'bx_flaky' fails check 'deterministic sampling'"),
    ((check_environment, "bx_forgetful"), "environment 'bx_forgetful' fails check 'state round trip'"),
    ((check_reward, "bx_wrong_shape"), "reward 'bx_wrong_shape' fails check 'shape'"),
    ((check_reward, "bx_per_token"), "register it with granularity='process'"),
    ((check_reward, "bx_infinite"), "reward 'bx_infinite' fails check 'values'"),
    ((check_reward, "bx_undocumented"), "fails check 'config': Undocumented field(s) bonus have no description"),
    ((check_reward, "bx_heavy"), "reward 'bx_heavy' fails check 'registration cheap'"),
    ((check_objective, "bx_nan_loss"), "objective 'bx_nan_loss' fails check 'loss': the loss is nan"),
    ((check_objective, "bx_bad_metric"), "returned metric 'entropy', not named 'group/name'"),
    ((check_objective, "bx_detached"), "objective 'bx_detached' fails check 'loss': the loss has no gradient"),
    ((check_objective, "bx_hand_off"), "objective 'bx_hand_off' fails check 'gradients by hand': gradients() wrote "
                                       "other gradients than loss().backward() on 6 of"),
    ((check_policy, "bx_shared_reference"), "policy 'bx_shared_reference' fails check 'reference frozen'"),
    ((check_kind, "bx_shuffled"), "kind 'bx_shuffled' fails check 'deterministic collect'"),
]


@pytest.mark.parametrize("call,expected", BROKEN, ids=[f"{c[0].__name__}-{c[1]}" for c, _ in BROKEN])
def test_suites_catch_broken_components(use_broken, call, expected):
    check, name = call
    message = _fails(check, name)
    assert expected in message
    assert message.count("\n") == 0  # one line: component, check, problem; fix


def test_registration_failure_points_at_the_import(use_broken):
    message = _fails(check_reward, "bx_heavy")
    assert "imports torch" in message and "rlxbroken_heavy.py:2" in message


def test_required_setting_without_a_default_is_reported_unless_passed(prompts_file):
    assert "path have no default" in _fails(check_environment, "prompts")
    assert "state round trip" in check_environment("prompts", {"path": str(prompts_file), "eval_size": 4})


def test_unknown_component_and_missing_settings_are_one_line_failures():
    assert "fails check 'registered'" in _fails(check_reward, "no_such_reward")
    message = _fails(check_reward, "ensemble")  # members are required settings of the component
    assert "fails check 'build'" in message and "needs at least two members" in message


def test_pytest_plugin_imports_nothing_heavy():
    from rlx.testing._support import heavy_imports

    assert heavy_imports(["rlx.testing.pytest_plugin"])["rlx.testing.pytest_plugin"]["heavy"] == []


# -- rlx_run -----------------------------------------------------------------------------

def test_rlx_run_trains_in_process(rlx_run, tmp_path):
    metrics = rlx_run("--objective", "grpo", "--set", "objective.num_generations=2", env__eval_size=8)
    assert metrics.result.status == "FINISHED" and metrics.result.steps == 2
    assert "reward/mean" in metrics and 0 <= metrics["eval/accuracy"] <= 1
    assert Path(metrics.result.policy_dir).is_relative_to(tmp_path / "rlx-home")

    from rlx.home import catalog_url
    from rlx.registry.catalog import Catalog

    assert catalog_url().startswith("sqlite:///" + str(tmp_path / "rlx-home"))
    assert Catalog(catalog_url()).get_run(metrics.result.run_id) is not None


def test_run_rejects_flags_it_does_not_take(tmp_path):
    from rlx.errors import UsageError

    with pytest.raises(UsageError, match="unsupported argument"):
        run("--num-processes", "2", home=tmp_path)


@pytest.mark.slow
def test_rlx_run_with_tracking(rlx_run, tmp_path):
    metrics = rlx_run("--objective", "sft", steps=1, tracking=True, env__eval_size=8)
    assert metrics.result.mlflow_run_id and (tmp_path / "rlx-home" / "mlflow.db").is_file()
