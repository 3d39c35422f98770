"""Learned rewards: the shared scorer encoding, rm's loss, the ensemble rules, and the
whole chain for real (rm -> grpo --reward orm, prm-train -> grpo with a learned PRM,
an ensemble of two reward models and a rule source)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def tiny():
    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    return TinyPolicy(TinyConfig())


def test_step_ends_are_the_non_empty_lines():
    from rlx.plugins.shared.scorers import step_ends

    assert step_ends("1+2=3\nA:3") == [5, 9]
    assert step_ends("3*4=12  \n\n12+1=13\nA:13\n") == [6, 17, 22]
    assert step_ends("") == [] and step_ends("\n \n") == []


def test_encode_finds_each_steps_separator(tiny):
    from rlx.plugins.shared.scorers import encode, step_ends

    tok = tiny.tokenizer
    completions = ["1+2=3\nA:3", "3*4=12\n12+1=13\nA:13"]
    enc = encode(tok, ["Q:1+2\n", "Q:3*4+1\n"], completions)
    assert enc.has_eos and enc.prompt_lens == [6, 8]
    for row, text in enumerate(completions):
        pos = enc.separators(row, step_ends(text))
        pieces = [tok.decode([int(enc.input_ids[row, p])]) for p in pos]
        assert pieces == ["\n"] * (len(pos) - 1) + [tok.eos_token]  # newline after a step, EOS after the last
        assert int(enc.attention_mask[row].sum()) == pos[-1] + 1  # right-padded, EOS is the last real token
    # a row cut to max_length keeps its end
    cut = encode(tok, ["Q:3*4+1\n"], [completions[1]], max_length=10)
    assert cut.input_ids.shape[1] == 10 and int(cut.input_ids[0, -1]) == tok.eos_token_id


@pytest.mark.parametrize("head", ["sequence", "token"])
def test_classifier_starts_from_the_policy_backbone(tiny, head):
    from rlx.plugins.shared.scorers import classifier_from_lm

    model = classifier_from_lm(tiny.model, tiny.tokenizer, head)
    lm = tiny.model.base_model.state_dict()
    for k, v in model.base_model.state_dict().items():
        assert torch.equal(v, lm[k]), k
    assert model.config.num_labels == 1 and model.config.pad_token_id == tiny.tokenizer.pad_token_id


def test_implicit_scores_match_the_policys_log_probs(tiny, tmp_path):
    """An implicit reward model's outcome score is beta x the summed log-ratio of its
    completion (EOS included) to the reference, as the policy's own log_probs give it."""
    import copy

    from rlx.plugins.shared.scorers import IMPLICIT, Scorer, step_ends

    trained = copy.deepcopy(tiny)
    with torch.no_grad():
        for p in trained.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    setattr(trained.model.config, IMPLICIT, 0.5)
    trained.save(tmp_path / "rm")
    tiny.save(tmp_path / "rm" / "reference")
    scorer = Scorer(tmp_path / "rm", "sequence", "reward.orm.model", device="cpu")
    prompts, completions = ["Q:1+2\n", "Q:3*4+1\n"], ["1+2=3\nA:3", "3*4=12\n12+1=13\nA:13"]
    got = scorer.outcome(prompts, completions)
    batch = tiny.encode(prompts, completions)  # left-padded, another code path
    with torch.no_grad():
        lp, _ = trained.log_probs(batch)
        ref, _ = tiny.log_probs(batch)
    want = 0.5 * ((lp - ref) * batch["mask"]).sum(-1)
    assert torch.allclose(got, want, atol=1e-4)
    # per step: sigmoid of the running sum at each separator; the last one is the outcome
    steps = scorer.steps(prompts, completions, [step_ends(c) for c in completions])
    assert [len(x) for x in steps] == [2, 3]
    assert all(0 < v < 1 for x in steps for v in x)
    assert steps[1][-1] == pytest.approx(float(torch.sigmoid(want[1])), abs=1e-4)
    # without its reference the folder is refused with a one-line error
    import shutil

    from rlx.errors import UsageError

    shutil.rmtree(tmp_path / "rm" / "reference")
    with pytest.raises(UsageError, match="reference/"):
        Scorer(tmp_path / "rm", "sequence", "reward.orm.model")


def test_prm_classifier_head_trains_on_checker_labels(tiny):
    """prm-train's classifier head: labels at separators from the checker, a finite BCE."""
    import copy

    from rlx.plugins.arithmetic.env import ArithmeticEnv
    from rlx.plugins.prm_train.config import PRMTrainConfig
    from rlx.plugins.prm_train.objective import PRMTraining

    policy = copy.deepcopy(tiny)
    env = ArithmeticEnv({"eval_size": 8}, seed=0)
    obj = PRMTraining(PRMTrainConfig(head="classifier", samples_per_task=1), env=env, max_new_tokens=32)
    obj.setup(policy)
    assert type(policy.model).__name__ == "LlamaForTokenClassification"
    tasks = env.sample(3)
    batch = obj.make_batch(env, policy, tasks, seeds=[1, 2, 3])
    assert len(batch) == 9  # per task: one sample, gold, flawed
    where = batch["step_mask"]
    gold_rows = [r for r, text in enumerate(batch.meta["completion"]) if text == tasks[batch.meta["of_task"][r]]["solution"]]
    assert all(bool(batch["step_labels"][r][where[r]].all()) for r in gold_rows)  # every gold step is right
    assert float(batch["step_labels"][where].mean()) < 1  # the flawed ones are not
    loss, m = obj.loss(policy, batch)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= float(m["prm/step_agreement"]) <= 1


def test_rm_loss_by_hand():
    from rlx.batch import Batch
    from rlx.plugins.rm.config import RMConfig
    from rlx.plugins.rm.objective import RewardModelTraining

    scores = torch.tensor([2.0, -1.0, 0.5, 0.0])  # chosen 2, -1; rejected 0.5, 0

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": scores[:, None]})()

    policy = type("P", (), {"model": Fixed()})()
    batch = Batch({"input_ids": torch.zeros(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3)})
    loss, m = RewardModelTraining(RMConfig(head="classifier", center_weight=0.1, margin=0.5)).loss(policy, batch)
    d = torch.tensor([1.5, -1.0])
    bt = float(-torch.nn.functional.logsigmoid(d - 0.5).mean())
    assert float(loss) == pytest.approx(bt + 0.1 * float((scores ** 2).mean()), rel=1e-6)
    assert float(m["rm/accuracy"]) == 0.5 and float(m["rm/margin"]) == pytest.approx(0.25)


def test_ensemble_rules_by_hand():
    from rlx.plugins.ensemble.config import EnsembleConfig
    from rlx.plugins.ensemble.reward import aggregate

    s = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]])  # 3 members, 2 completions
    assert torch.allclose(aggregate(s, "mean"), torch.tensor([2.0, 1.0]))
    assert torch.allclose(aggregate(s, "min"), torch.tensor([1.0, 0.0]))
    # population variances: (1+1+0)/3 and (1+1+4)/3
    assert torch.allclose(aggregate(s, "uwo", 0.5), torch.tensor([2.0 - 0.5 * 2 / 3, 1.0 - 0.5 * 2.0]))
    assert EnsembleConfig(models="a, b,c").models == ["a", "b", "c"]


def test_learned_reward_errors_are_one_line(tmp_path):
    from rlx.errors import UsageError
    from rlx.plugins.orm.config import ORMConfig
    from rlx.plugins.orm.reward import ORM

    with pytest.raises(UsageError, match="needs a model"):
        ORM(ORMConfig())
    with pytest.raises(UsageError, match="not a saved model directory"):
        ORM(ORMConfig(model=str(tmp_path)))


@pytest.mark.slow
def test_reward_models_end_to_end(tmp_path):
    """rm (a classifier and an implicit model) and prm-train save loadable models; grpo
    runs on orm, on the learned PRM and on an ensemble of both reward models plus the
    verifier."""
    from _cli import latest_run, metric_history, rlx

    fast = ["--set", "run.threads=1", "--no-progress", "--set", "env.eval_size=16"]
    rms = []
    for seed, head in ((0, "classifier"), (1, "implicit")):
        proc = rlx("run", "--objective", "rm", "--env", "preferences", "--steps", "3", "--seed", str(seed),
                   "--set", f"objective.head={head}", "--set", "run.batch_size=8", "--set", "run.eval_every=0",
                   *fast, home=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "reward model saved to" in proc.stdout
        run, client = latest_run(tmp_path)
        folder = Path(run["policy_dir"])
        config = json.loads((folder / "config.json").read_text())
        kind = "LlamaForSequenceClassification" if head == "classifier" else "LlamaForCausalLM"
        assert config["architectures"] == [kind]
        assert (folder / "reference" / "config.json").is_file() == (head == "implicit")
        assert len(config["rlx_score_calibration"]) == 2
        assert len(metric_history(client, run["mlflow_run_id"], "rm/accuracy")) == 3
        assert metric_history(client, run["mlflow_run_id"], "eval/preference_accuracy")
        rms.append(str(folder))

    grpo = ["run", "--objective", "grpo", "--steps", "1", "--set", "run.batch_size=4", "--set", "run.eval_every=0",
            *fast]
    proc = rlx(*grpo, "--reward", "orm", "--set", f"reward.orm.model={rms[0]}", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    assert metric_history(client, run["mlflow_run_id"], "reward/orm")

    for how in ("min", "uwo"):
        proc = rlx(*grpo, "--reward", "ensemble", "--set", f"reward.ensemble.models={','.join(rms)}",
                   "--set", "reward.ensemble.sources=verifier", "--set", f"reward.ensemble.aggregation={how}",
                   home=tmp_path)
        assert proc.returncode == 0, proc.stderr
        run, client = latest_run(tmp_path)
        assert metric_history(client, run["mlflow_run_id"], "reward/ensemble")

    proc = rlx("run", "--objective", "prm-train", "--steps", "2", "--set", "run.batch_size=4",
               "--set", "run.eval_every=0", *fast, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    prm = run["policy_dir"]
    from rlx.plugins.prm_train.config import PRMTrainConfig

    assert json.loads((Path(prm) / "config.json").read_text())["rlx_implicit_beta"] == PRMTrainConfig().beta
    assert (Path(prm) / "reference" / "config.json").is_file()
    agreement = metric_history(client, run["mlflow_run_id"], "eval/step_agreement")
    assert len(agreement) == 2 and 0 <= agreement[-1].value <= 1  # before and after training

    proc = rlx(*grpo, "--reward", "prm", "--set", "reward.prm.backend=model", "--set", f"reward.prm.model={prm}",
               home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    (value,) = [m.value for m in metric_history(client, run["mlflow_run_id"], "reward/prm")]
    assert 0 <= value <= 1  # min over steps of probabilities

    # a wrong folder is a one-line error, not a traceback
    proc = rlx(*grpo, "--reward", "orm", "--set", f"reward.orm.model={tmp_path / 'nope'}", home=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not a saved model directory" in proc.stderr
