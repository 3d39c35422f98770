"""``Environment.datasets()`` of the built-in environments (what a run logs to MLflow as its
inputs), and the fixed held-out split (``eval_seed``) it describes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlx.environment import DatasetInfo, digest_of, file_digest

SOURCE_TYPES = {"local", "hub", "procedural", "simulator"}

# The first held-out prompts before eval_seed existed (run seeds 0 and 1, default config):
# eval_seed=N must keep drawing exactly these, so seed-0 figures stay comparable.
SEED0_PROMPTS = ["Q:9+5-14\n", "Q:6+10+8\n", "Q:9-0-4+1\n", "Q:8+8+13\n"]
SEED1_PROMPTS = ["Q:10-8-2\n", "Q:2+4+9\n", "Q:19+4+16-10\n", "Q:4-2+16+9\n"]


def arithmetic(seed: int = 0, **cfg: Any):
    from rlx.plugins.arithmetic.env import ArithmeticEnv

    return ArithmeticEnv(cfg, seed=seed)


def by_context(infos: list[DatasetInfo]) -> dict[str, DatasetInfo]:
    assert len({i.context for i in infos}) == len(infos), infos
    return {i.context: i for i in infos}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa_rows(n: int, answer: bool = True) -> list[dict[str, Any]]:
    return [{"prompt": f"Q{i}", **({"answer": str(i)} if answer else {})} for i in range(n)]


def pair_rows(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"Q{i}", "chosen": f"A:{i}", "rejected": f"A:{i + 1}"} for i in range(n)]


# -- every built-in environment --------------------------------------------------------


def builtin_environments() -> list[str]:
    from rlx.registry import get_registry

    reg = get_registry()
    return [n for n in reg.names("environment")
            if isinstance(reg.get("environment", n).factory, str)
            and reg.get("environment", n).factory.startswith("rlx.plugins.")]


def test_the_builtin_environments_are_all_covered():
    # a new built-in environment joins the parametrized check below by getting an entry here
    assert set(builtin_environments()) == {"arithmetic", "gym", "preferences", "prompts"}


@pytest.mark.parametrize("name, config", [
    ("arithmetic", {"eval_size": 16}),
    ("prompts", {"eval_size": 4, "path": "{tmp}/q.jsonl"}),
    ("prompts", {"eval_size": 4, "path": "{tmp}/bare.jsonl"}),
    ("prompts", {"eval_size": 0, "path": "{tmp}/q.jsonl"}),
    ("preferences", {"eval_size": 8}),
    ("preferences", {"eval_size": 4, "path": "{tmp}/pairs.jsonl"}),
    ("gym", {"num_envs": 2, "eval_episodes": 3}),
])
def test_builtin_environments_describe_their_data(tmp_path, name, config):
    from rlx.environment import ControlEnvironment, PreferenceEnvironment, TextEnvironment
    from rlx.registry import get_registry

    write_jsonl(tmp_path / "q.jsonl", qa_rows(12))
    write_jsonl(tmp_path / "bare.jsonl", qa_rows(12, answer=False))
    write_jsonl(tmp_path / "pairs.jsonl", pair_rows(12))
    config = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in config.items()}
    spec = get_registry().get("environment", name)
    env = spec.build(spec.config.model_validate(config), seed=3)
    try:
        infos = env.datasets()
        assert infos == env.datasets()  # stable: logged once, must mean the same thing each time
        assert all(isinstance(i, DatasetInfo) for i in infos)
        contexts = by_context(infos)
        assert "training" in contexts and set(contexts) <= {"training", "evaluation"}
        assert len({i.name for i in infos}) == len(infos)
        for info in infos:
            assert info.name and info.source and info.source_type in SOURCE_TYPES, info
            assert isinstance(info.digest, str) and 0 < len(info.digest) <= 36, info
            assert info.rows is None or (isinstance(info.rows, int) and info.rows > 0), info
            assert isinstance(info.columns, tuple) and all(isinstance(c, str) and c for c in info.columns), info
            assert info.settings is None or isinstance(info.settings, dict)
            json.dumps(info.settings)  # MLflow stores them as JSON
            if info.source_type == "local":
                assert Path(info.source).is_absolute() and Path(info.source).is_file(), info
            if info.source_type == "procedural":
                assert info.settings, info
        evaluation = contexts.get("evaluation")
        if isinstance(env, TextEnvironment):
            held = env.eval_tasks()
            assert (evaluation is None) == (not held)  # an entry exactly when something is evaluated
            assert evaluation is None or evaluation.rows == len(held)
        elif isinstance(env, PreferenceEnvironment):
            assert evaluation is not None and evaluation.rows == len(env.eval_pairs())
        else:
            assert isinstance(env, ControlEnvironment)
            assert evaluation is not None and evaluation.rows == env.config.eval_episodes
    finally:
        getattr(env, "close", lambda: None)()


# -- arithmetic ----------------------------------------------------------------------------


def test_arithmetic_seeds_share_the_held_out_split_and_its_digest():
    a, b = arithmetic(seed=0), arithmetic(seed=1)
    assert a.eval_tasks() == b.eval_tasks()
    assert [t["prompt"] for t in a.eval_tasks()[:4]] == SEED0_PROMPTS
    da, db = by_context(a.datasets()), by_context(b.datasets())
    assert da["evaluation"].digest == db["evaluation"].digest
    assert da["evaluation"].rows == 256
    # training problems do follow the run seed, and so does their digest
    assert a.sample(20) != b.sample(20)
    assert da["training"].digest != db["training"].digest
    assert da["training"].digest == digest_of(a.config.model_dump(), 0)
    assert da["training"].settings == a.config.model_dump()


def test_arithmetic_eval_seed_picks_another_split_in_the_old_format():
    default, zero, one = arithmetic(seed=5), arithmetic(seed=5, eval_seed=0), arithmetic(seed=0, eval_seed=1)
    assert zero.eval_tasks() == default.eval_tasks()
    # eval_seed stands where the run seed stood: eval_seed=1 is the split run seed 1 had
    assert [t["prompt"] for t in one.eval_tasks()[:4]] == SEED1_PROMPTS
    assert {t["prompt"] for t in one.eval_tasks()} != {t["prompt"] for t in zero.eval_tasks()}
    assert by_context(one.datasets())["evaluation"].digest != by_context(zero.datasets())["evaluation"].digest
    held = {t["prompt"] for t in one.eval_tasks()}
    assert not held & {t["prompt"] for t in one.sample(2000)}  # training still skips this split


def test_arithmetic_eval_digest_is_the_problems_not_the_settings():
    env = arithmetic(seed=2, eval_size=32)
    info = by_context(env.datasets())["evaluation"]
    assert info.digest == digest_of([[t["prompt"], t["answer"]] for t in env.eval_tasks()])
    env.sample(50)
    assert by_context(env.datasets())["evaluation"] == info  # training draws leave it alone
    assert by_context(arithmetic(eval_size=16).datasets())["evaluation"].digest != info.digest
    assert by_context(arithmetic(eval_size=32, max_ops=4).datasets())["evaluation"].digest != info.digest


# -- preferences ---------------------------------------------------------------------------


def test_synthetic_preferences_share_held_out_pairs_across_seeds():
    from rlx.plugins.preferences.env import PreferencesEnv

    a, b = PreferencesEnv({"eval_size": 16}, seed=0), PreferencesEnv({"eval_size": 16}, seed=4)
    assert a.eval_pairs() == b.eval_pairs()
    assert a.eval_pairs()[0]["rejected"] == "9+5=17\n17-14=3\nA:3"  # the seed-0 pair from before eval_seed
    assert a.answer_tasks().eval_tasks() == b.answer_tasks().eval_tasks() == arithmetic(seed=9, eval_size=16).eval_tasks()
    da, db = by_context(a.datasets()), by_context(b.datasets())
    assert da["evaluation"].digest == db["evaluation"].digest
    assert da["training"].digest != db["training"].digest and a.sample(8) != b.sample(8)

    other = PreferencesEnv({"eval_size": 16, "eval_seed": 1}, seed=0)
    assert other.eval_pairs() != a.eval_pairs()
    assert other.answer_tasks().eval_tasks() == arithmetic(eval_size=16, eval_seed=1).eval_tasks()
    assert by_context(other.datasets())["evaluation"].digest != da["evaluation"].digest
    held = {p["prompt"] for p in other.eval_pairs()}
    assert not held & {p["prompt"] for p in other.sample(300)}


def test_preferences_file_digests_follow_the_file(tmp_path):
    from rlx.plugins.preferences.env import PreferencesEnv

    rows = pair_rows(10)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    first = by_context(PreferencesEnv({"path": str(path), "eval_size": 3}).datasets())
    assert first["training"].digest == file_digest(path) and first["training"].rows == 7
    assert first["training"].name == "pairs-train" and first["training"].source == str(path.resolve())
    assert first["evaluation"].rows == 3

    write_jsonl(path, [{**rows[0], "chosen": "A:changed"}] + rows[1:])  # a training row edited
    second = by_context(PreferencesEnv({"path": str(path), "eval_size": 3}).datasets())
    assert second["training"].digest != first["training"].digest
    assert second["evaluation"].digest == first["evaluation"].digest  # the held-out rows did not change

    write_jsonl(path, rows[:-1] + [{**rows[-1], "rejected": "A:changed"}])  # a held-out row edited
    third = by_context(PreferencesEnv({"path": str(path), "eval_size": 3}).datasets())
    assert third["evaluation"].digest != first["evaluation"].digest


# -- prompts -------------------------------------------------------------------------------


def test_prompts_file_digest_changes_with_the_file(tmp_path):
    from rlx.plugins.prompts.env import PromptsEnv

    rows = qa_rows(10)
    path = write_jsonl(tmp_path / "questions.jsonl", rows)
    first = by_context(PromptsEnv({"path": str(path), "eval_size": 4}).datasets())
    train = first["training"]
    assert (train.name, train.source_type, train.rows, train.columns) == ("questions-train", "local", 6,
                                                                        ("prompt", "answer"))
    assert train.digest == file_digest(path) and train.source == str(path.resolve())
    assert first["evaluation"].rows == 4 and first["evaluation"].name == "questions-eval"

    copy = write_jsonl(tmp_path / "copy.jsonl", rows)  # the same bytes elsewhere: the same data
    assert by_context(PromptsEnv({"path": str(copy), "eval_size": 4}).datasets())["training"].digest == train.digest

    write_jsonl(path, [{**rows[0], "answer": "changed"}] + rows[1:])
    second = by_context(PromptsEnv({"path": str(path), "eval_size": 4}).datasets())
    assert second["training"].digest != train.digest
    assert second["evaluation"].digest == first["evaluation"].digest

    write_jsonl(path, rows[:-1] + [{**rows[-1], "prompt": "changed"}])
    third = by_context(PromptsEnv({"path": str(path), "eval_size": 4}).datasets())
    assert third["evaluation"].digest != first["evaluation"].digest


def test_prompts_without_answers_log_no_evaluation(tmp_path):
    from rlx.plugins.prompts.env import PromptsEnv

    path = write_jsonl(tmp_path / "bare.jsonl", qa_rows(8, answer=False))
    infos = PromptsEnv({"path": str(path), "eval_size": 2}).datasets()
    assert [(i.context, i.rows, i.columns) for i in infos] == [("training", 6, ("prompt",))]


# -- gym -----------------------------------------------------------------------------------


def test_gym_datasets_name_the_simulator_and_its_settings():
    pytest.importorskip("gymnasium")
    from rlx.plugins.gym.config import GymConfig
    from rlx.plugins.gym.env import GymEnv

    def infos(seed: int = 0, **cfg: Any) -> dict[str, DatasetInfo]:
        env = GymEnv(GymConfig(num_envs=2, **cfg), seed=seed)
        try:
            return by_context(env.datasets())
        finally:
            env.close()

    base = infos()
    train, evaluation = base["training"], base["evaluation"]
    assert (train.source, train.source_type) == ("gymnasium:CartPole-v1", "simulator")
    assert train.settings["id"] == "CartPole-v1" and train.settings["num_envs"] == 2
    assert evaluation.rows == 10 and evaluation.source == train.source
    assert infos() == base
    assert infos(normalize_obs=True)["training"].digest != train.digest
    assert infos(id="Acrobot-v1")["training"].source == "gymnasium:Acrobot-v1"
    assert infos(seed=1)["training"].digest != train.digest  # start states follow the seed
    assert infos(eval_episodes=4)["training"].digest == train.digest
    assert infos(eval_episodes=4)["evaluation"].digest != evaluation.digest
