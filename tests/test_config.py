"""Config composition: defaults < TOML < flags < --set, validated per component."""

from __future__ import annotations

import pytest

from rlx.config import RunSettings, compose, flatten, parse_value, resolve, validate_section
from rlx.errors import ConfigError, UsageError
from rlx.registry import get_registry


def test_precedence(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[objective]\nname = "grpo"\nbeta = 0.5\nepsilon = 0.3\n[run]\nseed = 7\nsteps = 9\n'
                    '[reward.prm]\nweight = 0.25\n')
    raw = compose(toml, {"seed": 3, "reward": ["prm", "verifier"]}, ["objective.beta=0.1", "run.steps=11"])
    cfg = resolve(raw, get_registry())
    assert cfg.objective.beta == 0.1            # --set beats TOML
    assert cfg.objective.epsilon == 0.3         # TOML beats default
    assert cfg.run.seed == 3                    # flag beats TOML
    assert cfg.run.steps == 11                  # --set beats TOML
    assert cfg.rewards["prm"].weight == 0.25    # TOML fields kept for a flagged reward
    assert list(cfg.rewards) == ["prm", "verifier"]
    assert cfg.objective.loss_type == "grpo"    # default
    assert cfg.names == {"objective": "grpo", "env": "arithmetic", "policy": "tiny", "kind": "text",
                         "reward": "prm,verifier"}


def test_defaults_are_the_headline_run():
    cfg = resolve(compose(None, {"reward": ["prm"]}), get_registry())
    assert (cfg.names["objective"], cfg.names["env"], cfg.names["policy"]) == ("grpo", "arithmetic", "tiny")


def test_env_default_reward_when_none_given():
    cfg = resolve(compose(None, {}), get_registry())
    assert list(cfg.rewards) == ["verifier"]


def test_resolved_config_round_trips():
    cfg = resolve(compose(None, {"reward": ["prm"]}, ["objective.beta=0.2"]), get_registry())
    again = resolve(cfg.to_dict(), get_registry())
    assert again.to_dict() == cfg.to_dict()
    flat = flatten(cfg.to_dict())
    assert flat["objective.beta"] == 0.2 and flat["reward.prm.aggregation"] == "min"


def test_parse_value():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("+-") == "+-" and parse_value('"x y"') == "x y" and parse_value("[1, 2]") == [1, 2]


def test_errors_name_field_and_allowed_values():
    with pytest.raises(ConfigError, match=r"objective.scale_rewards: .*'group'.*'batch'.*'none'"):
        resolve(compose(None, {}, ["objective.scale_rewards=all"]), get_registry())
    with pytest.raises(UsageError, match="did you mean 'grpo'"):
        resolve(compose(None, {"objective": "grpoo"}), get_registry())


# -- bad values: one ConfigError naming the field, the problem and the fix ---------------

def _resolve(flags=None, sets=None, config=None):
    return resolve(compose(config, flags or {}, sets), get_registry())


@pytest.mark.parametrize("seed", [-1, 2**32, 99999999999999999999])
def test_seed_outside_32_bits(seed):
    with pytest.raises(ConfigError, match=r"run.seed: seeds must be from 0 to 4294967295 .*numpy and gymnasium"):
        _resolve({"seed": seed})


def test_seed_range_ends_are_accepted():
    assert _resolve({"seed": 0}).run.seed == 0
    assert _resolve({"seed": 2**32 - 1}).run.seed == 2**32 - 1


def test_reward_section_must_be_a_table(tmp_path):
    with pytest.raises(ConfigError, match=r"--set reward.verifier=1: reward.verifier must be a table.*"
                                          r"--set reward.verifier.weight=1"):
        _resolve(sets=["reward.verifier=1"])
    nested = tmp_path / "nested.toml"
    nested.write_text("[reward]\nverifier = 3\n")
    with pytest.raises(ConfigError, match=r"nested.toml: reward.verifier must be a table.*\[reward.verifier\] "
                                          r"table with weight = 3"):
        _resolve(config=nested)
    top = tmp_path / "top.toml"
    top.write_text("reward = 3\n")
    with pytest.raises(ConfigError, match=r"top.toml: 'reward' must be a table of reward sources or a list"):
        _resolve(config=top)
    with pytest.raises(ConfigError, match="reward.verifier must be a table"):  # resolve() called directly
        resolve({**compose(None, {}), "reward": {"verifier": "x"}}, get_registry())


def test_deeply_nested_toml_is_invalid_toml(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 100_000)
    with pytest.raises(ConfigError, match=r"config file '.*deep.toml' is not valid TOML: .*nest too deeply"):
        compose(deep)
    # parses, but deeper than any setting: refused before copying and validating recurse on it
    parses = tmp_path / "parses.toml"
    parses.write_text("[run]\nx = " + "[" * 300 + "]" * 300 + "\n")
    with pytest.raises(ConfigError, match=r"parses.toml' nests arrays or tables more than 64 levels"):
        compose(parses)
    with pytest.raises(UsageError, match=r"--set value .* more than 64 levels"):
        compose(None, {}, ["run.x=" + "[" * 100_000])


@pytest.mark.parametrize("name,words", [
    ("", "needs a name"),
    ("   ", "needs a name"),
    ("../../x", "'.' and '..' are not experiment names"),
    ("/abs/dir", "not a path: '/' may only separate folder names"),
    ("a//b", "no leading, trailing or double '/'"),
    ("a/", "no leading, trailing or double '/'"),
    ("a\\b", r"'\\\\' is not allowed"),
    ("a\x00b", r"'\\x00' is not allowed"),
    ("a\nb", r"'\\n' is not allowed"),
    ("a\udcffb", "is not allowed"),  # an undecodable byte of the command line
    (".", "'.' and '..' are not experiment names"),
    ("..", "'.' and '..' are not experiment names"),
    ("x" * 201, "at most 200 bytes"),
    ("é" * 101, "at most 200 bytes"),  # bytes, not characters: 202 bytes
])
def test_experiment_is_a_name_not_a_path(name, words):
    with pytest.raises(ConfigError, match=r"run.experiment: .*" + words):
        _resolve({"experiment": name})
    with pytest.raises(ConfigError, match=r"run.experiment: .*" + words):  # the same from a config file
        validate_section("run", RunSettings, {"experiment": name})


def test_good_experiment_names():
    for name in ("rlx", "lr sweep 1e-4", "v1.2", "..x", "x" * 200, "é" * 100, "rlx/arithmetic", "team/a/b"):
        assert _resolve({"experiment": name}).run.experiment == name


def test_default_experiment_is_per_task():
    assert _resolve({}).run.experiment == "rlx/arithmetic"


def test_run_name_is_bounded_to_mlflow_limit():
    assert _resolve(sets=["run.name=" + "n" * 250]).run.name == "n" * 250
    with pytest.raises(ConfigError, match="run.name: String should have at most 250 characters"):
        _resolve(sets=["run.name=" + "n" * 251])


@pytest.mark.parametrize("item,got", [
    ("optim.lr=inf", "inf"), ("optim.lr=nan", "nan"), ("optim.weight_decay=inf", "inf"),
    ("generation.temperature=inf", "inf"), ("generation.temperature=-inf", "-inf"),
    ("objective.beta=inf", "inf"), ("objective.beta=nan", "nan"), ("reward.verifier.weight=nan", "nan"),
    ("reward.verifier.weight=-inf", "-inf"),
])
def test_non_finite_numbers_are_refused_everywhere(item, got):
    field = item.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{field}: must be a finite number \(got {got}\)$"):
        _resolve(sets=[item])


def test_non_finite_in_plugin_sections_through_validate_section():
    from pydantic import BaseModel

    class Inner(BaseModel):
        scale: float = 1.0

    class PluginConfig(BaseModel):
        alpha: float = 0.5
        weights: list[float] = [1.0]
        inner: Inner = Inner()

    assert validate_section("objective", PluginConfig, {"alpha": 0.25}).alpha == 0.25
    with pytest.raises(ConfigError, match=r"^objective.alpha: must be a finite number \(got inf\)$"):
        validate_section("objective", PluginConfig, {"alpha": float("inf")})
    with pytest.raises(ConfigError, match=r"^objective.alpha: must be a finite number \(got inf\)$"):
        validate_section("objective", PluginConfig, {"alpha": "inf"})  # a string becomes inf in validation
    with pytest.raises(ConfigError, match=r"^reward.x.weights.1: must be a finite number \(got nan\)$"):
        validate_section("reward.x", PluginConfig, {"weights": [1.0, float("nan")]})
    with pytest.raises(ConfigError, match=r"^env.inner.scale: must be a finite number \(got -inf\)$"):
        validate_section("env", PluginConfig, {"inner": {"scale": float("-inf")}})


def test_learning_rate_bound():
    assert _resolve(sets=["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"optim.lr: Input should be less than or equal to 1 \(got 1e\+39\)"):
        _resolve(sets=["optim.lr=1e39"])
    with pytest.raises(ConfigError, match=r"optim.lr: Input should be less than or equal to 1"):
        _resolve(sets=["optim.lr=2"])
