"""Config composition: defaults < TOML < flags < --set, validated per component."""

from __future__ import annotations

import pytest

from rlx.config import compose, flatten, parse_value, resolve
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
    assert cfg.names == {"objective": "grpo", "env": "arithmetic", "policy": "tiny", "reward": "prm,verifier"}


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
