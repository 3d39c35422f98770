"""Run names, groups and variants as the MLflow UI shows them (rlx.run_naming)."""

from __future__ import annotations

import pytest

from rlx.config import compose, resolve
from rlx.registry import get_registry
from rlx.run_naming import NAME_VARIANT_MAX, Identity


def _identity(flags=None, sets=None) -> tuple[Identity, object]:
    registry = get_registry()
    cfg = resolve(compose(None, flags or {}, sets), registry)
    return Identity(cfg, registry), cfg


def test_names_say_what_differs_from_the_defaults():
    plain, _ = _identity({"objective": "grpo", "reward": ["prm"]})
    dr, _ = _identity({"objective": "grpo", "reward": ["prm"]}, ["objective.loss_type=dr_grpo"])
    assert plain.name == "grpo-prm-arithmetic-s0"
    assert dr.name == "grpo-dr_grpo-prm-arithmetic-s0"
    assert dr.variant == {"objective.loss_type": "dr_grpo"} and plain.variant == {}
    assert dr.tags()["rlx.variant"] == "objective.loss_type=dr_grpo" and plain.tags()["rlx.variant"] == "defaults"
    # the environment's own default reward is not repeated in the name
    assert _identity({"objective": "grpo"})[0].name == "grpo-arithmetic-s0"
    # a number needs its field; how long it ran is not part of the name
    beta, _ = _identity({"objective": "grpo", "steps": 20}, ["objective.beta=0.1"])
    assert beta.name == "grpo-beta=0.1-arithmetic-s0"
    assert beta.variant == {"objective.beta": 0.1, "run.steps": 20}


def test_gym_runs_are_named_and_filed_by_their_environment_id():
    cart, cfg = _identity({"env": "gym"})
    assert cart.name == "ppo-CartPole-v1-s0" and cart.task == "CartPole-v1"
    assert cfg.run.experiment == "rlx/CartPole-v1"
    acro, cfg = _identity({"env": "gym", "seed": 2}, ["env.id=Acrobot-v1"])
    assert acro.name.startswith("ppo-") and acro.name.endswith("-Acrobot-v1-s2")
    assert cfg.run.experiment == "rlx/Acrobot-v1"
    # --experiment wins over the per-task default
    assert _identity({"env": "gym", "experiment": "mine"})[1].run.experiment == "mine"


def test_seeds_share_a_group_and_settings_do_not():
    group = {seed: _identity({"objective": "grpo", "seed": seed})[0].group for seed in (0, 1)}
    assert group[0] == group[1]
    # where and how it ran does not change what is learned
    moved = _identity({"objective": "grpo", "seed": 5, "device": "cpu"},
                      ["run.threads=1", "run.checkpoint_every=7", "run.name=mine", "run.eval_every=3"])[0]
    assert moved.group == group[0]
    assert _identity({"objective": "grpo"}, ["objective.loss_type=dapo"])[0].group != group[0]
    assert _identity({"objective": "grpo", "steps": 3})[0].group != group[0]
    assert _identity({"objective": "rloo"})[0].group != group[0]
    # the rewards are part of it, settings or not
    assert _identity({"objective": "grpo", "reward": ["prm"]})[0].group != group[0]


def test_long_variants_are_cut_and_counted():
    sets = ["objective.loss_type=dapo", "objective.beta=0.2", "objective.epsilon=0.3", "optim.lr=0.0003",
            "optim.warmup_steps=5", "generation.temperature=0.7", "generation.max_new_tokens=40",
            "run.batch_size=8", "objective.num_generations=4"]
    ident, _ = _identity({"objective": "grpo"}, sets)
    middle = ident.name[len("grpo-"):-len("-arithmetic-s0")]
    assert middle.startswith("dapo-")  # the choice leads
    assert len(middle) <= NAME_VARIANT_MAX + 4 and "-+" in middle, middle
    shown, left = middle.rsplit("-+", 1)
    assert len(shown.split("-")) + int(left) == len(sets)
    assert len(ident.tags()["rlx.variant"].split(", ")) == len(sets)  # the tag keeps every setting


def test_a_required_field_is_not_a_difference(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"prompt": "Q:1+1", "answer": "2"}\n' * 4)
    ident, _ = _identity({"objective": "grpo", "env": "prompts"}, [f"env.path={path}"])
    assert ident.variant == {} and ident.name == "grpo-prompts-s0"


@pytest.mark.parametrize("seed", [0, 7])
def test_explicit_names_win(seed):
    ident, _ = _identity({"objective": "grpo", "seed": seed}, ["run.name=baseline"])
    assert ident.name == "baseline"
