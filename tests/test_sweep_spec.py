"""Sweep specs: seeds, cells, and every cell's config validated by the plugins' models
before anything starts (in-process, fast)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rlx.errors import UsageError
from rlx.registry import get_registry
from rlx.sweep_spec import build_cells, cell_config, expand, from_flags, load_spec, parse_seeds, split_values


def _ids():
    counter = itertools.count()
    return lambda: f"{next(counter):012x}"


@pytest.mark.parametrize("given,seeds", [(3, [0, 1, 2]), ("2-4", [2, 3, 4]), ("0,3,7", [0, 3, 7]), ([5, 1], [5, 1])])
def test_seeds_forms(given, seeds):
    assert parse_seeds(given, "spec") == seeds


@pytest.mark.parametrize("given,words", [(0, "at least one seed"), ("4-2", "backwards"), ([1, 1], "listed twice"),
                                         ("a", "not a count"), (True, "must be a count"), ([2**32], "outside")])
def test_bad_seeds(given, words):
    with pytest.raises(UsageError, match=words):
        parse_seeds(given, "spec")


def test_cells_are_listed_cells_crossed_with_the_axes_in_order():
    cells = build_cells({"objective.beta": [0, 0.04], "run.steps": [5]},
                        [{"label": "a", "objective": "grpo"}, {"label": "b", "objective": "rloo"}], "spec")
    assert [c.label for c in cells] == ["a objective.beta=0 run.steps=5", "a objective.beta=0.04 run.steps=5",
                                        "b objective.beta=0 run.steps=5", "b objective.beta=0.04 run.steps=5"]
    assert cells[3].values == {"objective": "rloo", "objective.beta": 0.04, "run.steps": 5}


@pytest.mark.parametrize("axes,cells,words", [
    ({"run.seed": [1, 2]}, [], "seeds are the sweep's"),
    ({"run.experiment": ["a"]}, [], "share its experiment"),
    ({"objective.beta": []}, [], "non-empty list"),
    ({"objective.beta": [0, 0]}, [], "lists 0 twice"),
    ({"nosuch.key": [1]}, [], "not in a config section"),
    ({"launcher.address": ["auto"]}, [], "launcher setting"),
    ({"objective.beta": [0]}, [{"objective.beta": 1}], "both an axis and set"),
    ({}, [{"label": "x", "run.steps": 1}, {"label": "x", "run.steps": 2}], "both 'x'"),
])
def test_bad_cells(axes, cells, words):
    with pytest.raises(UsageError, match=words):
        build_cells(axes, cells, "spec")


def test_a_component_choice_replaces_its_section_like_the_flag():
    base = {"objective": {"name": "grpo", "beta": 0.1}, "reward": {"verifier": {"weight": 2.0}}, "run": {}}
    cfg = cell_config(base, {"objective": "rloo", "reward": ["verifier", "length"], "run.steps": 3})
    assert cfg["objective"] == {"name": "rloo"}  # grpo's settings do not leak into rloo
    assert cfg["reward"] == {"verifier": {"weight": 2.0}, "length": {}}
    assert cfg["run"]["steps"] == 3
    same = cell_config(base, {"objective": "grpo", "objective.beta": 0.2})
    assert same["objective"] == {"name": "grpo", "beta": 0.2}


def test_split_values_keeps_brackets_whole():
    assert split_values("0,0.04") == [0, 0.04]
    assert split_values("[1,2],[3]") == [[1, 2], [3]]
    assert split_values('"a,b",c') == ["a,b", "c"]


def test_expand_validates_every_cell_and_owns_seed_name_and_experiment(tmp_path):
    spec_file = tmp_path / "s.toml"
    spec_file.write_text('''
name = "betas"
seeds = "3-4"
experiment = "exp-x"
[base]
objective = "grpo"
run = { steps = 2 }
[axes]
"objective.beta" = [0.0, 0.04]
''')
    spec = load_spec(spec_file)
    plan = expand(spec, get_registry(), _ids())
    assert [(p.cell, p.seed) for p in plan] == [("objective.beta=0.0", 3), ("objective.beta=0.0", 4),
                                                ("objective.beta=0.04", 3), ("objective.beta=0.04", 4)]
    assert len({p.run_id for p in plan}) == 4
    first = plan[0].config
    assert first["objective"]["beta"] == 0.0 and plan[2].config["objective"]["beta"] == 0.04
    assert first["run"]["seed"] == 3 and first["run"]["experiment"] == "exp-x"
    assert first["run"]["name"] == "objective.beta=0.0 s3" and first["run"]["steps"] == 2


def test_a_bad_value_names_the_cell_and_the_field(tmp_path):
    spec = from_flags(None, {"objective": {"name": "grpo"}, "env": {}, "policy": {}, "reward": {}, "run": {},
                             "generation": {}, "optim": {}, "plugins": {}},
                      {}, ["objective.loss_type=grpo,nonsense"], "0-1", None)
    with pytest.raises(UsageError) as err:
        expand(spec, get_registry(), _ids())
    message = str(err.value)
    assert message.startswith("sweep cell 'objective.loss_type=nonsense': objective.loss_type")
    assert "\n" not in message


def test_flags_make_one_name_part_of_the_base_and_several_an_axis():
    from rlx.config import compose

    spec = from_flags(None, compose(None, {}, []), {"objective": "ppo,dqn", "env": "gym", "reward": None,
                                                    "policy": None}, [], "2", None)
    assert spec.name == "objective" and [c.label for c in spec.cells] == ["objective=ppo", "objective=dqn"]
    assert spec.base["env"] == {"name": "gym"} and spec.seeds == [0, 1]
    plan = expand(spec, get_registry(), _ids())
    assert {p.config["objective"]["name"] for p in plan} == {"ppo", "dqn"}
    assert {p.config["policy"]["name"] for p in plan} == {"mlp"}  # the control kind's default policy


def test_cells_on_several_tasks_share_the_first_cells_experiment():
    from rlx.config import compose

    spec = from_flags(None, compose(None, {"env": "gym"}, []), {"objective": None, "env": None, "reward": None,
                                                                "policy": None}, ["env.id=Acrobot-v1,CartPole-v1"],
                      "1", None)
    plan = expand(spec, get_registry(), _ids())
    assert {p.config["env"]["id"] for p in plan} == {"Acrobot-v1", "CartPole-v1"}
    assert {p.config["run"]["experiment"] for p in plan} == {"rlx/Acrobot-v1"}  # the parent's: the UI nests them


@pytest.mark.parametrize("spec", sorted((Path(__file__).resolve().parent.parent / "examples" / "sweeps").glob("*.toml")),
                         ids=lambda p: p.name)
def test_every_recipe_validates(spec):
    loaded = load_spec(spec)
    plan = expand(loaded, get_registry(), _ids())
    assert len(plan) == len(loaded.cells) * len(loaded.seeds) >= 1


def test_run_flags_after_the_double_dash_reach_every_run():
    from rlx.cli.sweep_cmd import _spec

    spec = _spec(None, ["--register", "sweep-policy", "--no-system-metrics"], [],
                 {"objective": "grpo,rloo", "reward": None, "env": None, "policy": None}, [], "1", None, None)
    plan = expand(spec, get_registry(), _ids())
    assert {(p.config["run"]["register_as"], p.config["run"]["system_metrics"]) for p in plan} == \
        {("sweep-policy", False)}
