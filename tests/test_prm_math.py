"""PRM math and placement checked against values computed by hand from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
from _approx import close

from rlx.batch import Batch
from rlx.plugins.arithmetic.config import ArithmeticConfig
from rlx.plugins.arithmetic.env import ArithmeticEnv
from rlx.plugins.prm.config import PRMConfig
from rlx.plugins.prm.reward import PRM, aggregate, refine, repeats_a_step, token_index
from rlx.reward import RewardConfig, RewardSource, combine

NAN = float("nan")



# ----------------------------------------------------------------------- aggregate

@pytest.mark.parametrize("how, expected", [
    ("min", 0.25),
    ("product", 1 * 0.5 * 0.25),        # 0.125
    ("last", 0.25),
    ("mean", (1 + 0.5 + 0.25) / 3),     # 0.583333...
])
def test_aggregate(how, expected):
    assert aggregate([1.0, 0.5, 0.25], how) == pytest.approx(expected)
    assert math.isnan(aggregate([], how))


def test_aggregate_mean_literal():
    assert aggregate([1.0, 0.5, 0.25], "mean") == pytest.approx(0.583333, abs=1e-6)
    assert aggregate([0.7], "product") == pytest.approx(0.7)


# -------------------------------------------------------------------------- refine

def test_refine_clip():
    s = [1.0, 0.0, 0.7, 0.5]
    # eta = 0.5: min(0.5, 0), min(-0.5, 0), min(0.2, 0), min(0, 0)
    assert refine(s, "clip", 0.5) == pytest.approx([0.0, -0.5, 0.0, 0.0])
    # eta = 1.0: min(0, 0), min(-1, 0), min(-0.3, 0), min(-0.5, 0)
    assert refine(s, "clip", 1.0) == pytest.approx([0.0, -1.0, -0.3, -0.5])
    assert refine([], "clip", 0.5) == []


def test_refine_delta_and_telescoping():
    s = [1.0, 1.0, 0.0, 0.5]
    # s_k - s_{k+1} for k < K, s_K last: 1-1, 1-0, 0-0.5, 0.5
    d = refine(s, "delta")
    assert d == pytest.approx([0.0, 1.0, -0.5, 0.5])
    for k in range(len(s)):  # sum of delta rewards from step k on equals s_k
        assert sum(d[k:]) == pytest.approx(s[k])
    assert refine([0.3], "delta") == pytest.approx([0.3])
    assert refine([], "delta") == []


def test_refine_none_is_identity():
    assert refine([1.0, 0.0, 0.5], "none") == [1.0, 0.0, 0.5]


@pytest.mark.parametrize("eta", [0.5, 1.0, 1.5])
def test_clip_cannot_be_farmed_by_repeating_correct_steps(eta):
    base = [1.0, 0.0, 1.0]
    ret = sum(refine(base, "clip", eta))
    for extra in range(1, 5):  # append `extra` more correct steps
        longer = sum(refine(base + [1.0] * extra, "clip", eta))
        assert longer <= ret + 1e-12
        ret = longer
    # without refinement the same padding raises the return by 1 per step
    assert sum(refine(base + [1.0] * 3, "none")) == sum(base) + 3


# --------------------------------------------------------------------- token_index

def test_token_index_char_level():
    ends = [1, 2, 3, 4, 5]  # one token per character
    # the token holding the character just before char_end is char_end - 1
    for char_end in range(1, 6):
        assert token_index(ends, char_end) == char_end - 1


def test_token_index_multi_char():
    # tokens "ab" | "cde" | "f" | "ghi": ends 2, 5, 6, 9
    ends = [2, 5, 6, 9]
    expected = {1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2, 7: 3, 8: 3, 9: 3}
    for char_end, tok in expected.items():
        assert token_index(ends, char_end) == tok, char_end
    assert token_index(ends, 12) == 3  # past the text (truncated): last token
    assert token_index([], 5) == 0


# ---------------------------------------------------------------- PRM end to end

def make_env() -> ArithmeticEnv:
    return ArithmeticEnv(ArithmeticConfig(), seed=0)


def line_end_tokens(text: str) -> list[int]:
    """Char-level tokens: the index of the last character of every non-empty line."""
    out, pos = [], 0
    for line in text.split("\n"):
        if line.strip():
            out.append(pos + len(line.rstrip()) - 1)
        pos += len(line) + 1
    return out


def with_wrong_middle_step(solution: str) -> str:
    lines = solution.split("\n")
    a, result = lines[1].split("=")
    lines[1] = f"{a}={int(result) + 1}"  # wrong result of the second step
    return "\n".join(lines)


def prm_batch(env: ArithmeticEnv):
    task = env.sample(1)[0]
    gold = env.demonstration(task)
    wrong = with_wrong_middle_step(gold)
    completions = [gold, wrong, ""]
    T = max(len(c) for c in completions)
    mask = torch.zeros(3, T)
    for i, c in enumerate(completions):
        mask[i, : max(len(c), 1)] = 1.0
    token_ends = [list(range(1, len(c) + 1)) for c in completions]
    batch = Batch({"mask": mask}, {"task": [task] * 3, "completion": completions, "token_ends": token_ends})
    return batch, task, completions


def test_example_task_by_hand():
    # seed 0's first problem, to anchor the helpers on literal numbers
    env = make_env()
    batch, task, (gold, wrong, _) = prm_batch(env)
    assert gold == "3+20=23\n23+2=25\nA:25"
    assert wrong == "3+20=23\n23+2=26\nA:25"
    # "3+20=23" ends at char 7 -> token 6; "23+2=25" spans 8..14 -> token 14; "A:25" 16..19 -> 19
    assert line_end_tokens(gold) == [6, 14, 19]
    scores = PRM(PRMConfig(), env=env).score(batch)
    expected = torch.full((3, 20), NAN)
    expected[0, [6, 14, 19]] = torch.tensor([1.0, 1.0, 1.0])
    expected[1, [6, 14, 19]] = torch.tensor([1.0, 0.0, 0.0])  # prefix semantics: after a wrong step all wrong
    expected[2, 0] = 0.0  # empty completion: one incorrect score at its end
    close(scores, expected)


def expected_dense(T: int, rows: list[tuple[list[int], list[float]]]) -> torch.Tensor:
    dense = torch.full((len(rows), T), NAN)
    for i, (pos, vals) in enumerate(rows):
        for p, v in zip(pos, vals):
            dense[i, p] = v
    return dense


def test_prm_process_scores_at_step_ends():
    env = make_env()
    batch, task, (gold, wrong, _) = prm_batch(env)
    T = batch["mask"].shape[1]
    K = len(line_end_tokens(gold))  # steps + answer line
    assert K == len(task["steps"]) + 1 and K >= 3
    scores = PRM(PRMConfig(), env=env).score(batch)
    assert scores.shape == (3, T)
    gold_pos, wrong_pos = line_end_tokens(gold), line_end_tokens(wrong)
    close(scores, expected_dense(T, [(gold_pos, [1.0] * K),
                                     (wrong_pos, [1.0] + [0.0] * (K - 1)),
                                     ([0], [0.0])]))
    # non-NaN exactly at the step ends
    assert (~torch.isnan(scores[0])).nonzero().flatten().tolist() == gold_pos
    assert (~torch.isnan(scores[1])).nonzero().flatten().tolist() == wrong_pos
    assert (~torch.isnan(scores[2])).nonzero().flatten().tolist() == [0]


@pytest.mark.parametrize("how, gold_v, wrong_v_of_K", [
    ("min", 1.0, lambda K: 0.0),
    ("product", 1.0, lambda K: 0.0),
    ("last", 1.0, lambda K: 0.0),
    ("mean", 1.0, lambda K: 1.0 / K),  # one correct step out of K
])
def test_prm_outcome_granularity(how, gold_v, wrong_v_of_K):
    env = make_env()
    batch, _, (gold, _, _) = prm_batch(env)
    K = len(line_end_tokens(gold))
    prm = PRM(PRMConfig(granularity="outcome", aggregation=how), env=env)
    out = prm.score(batch)
    assert out.shape == (3,)
    close(out, [gold_v, wrong_v_of_K(K), 0.0])  # empty: aggregate([0]) = 0 for every rule
    close(prm.summarize(out), [gold_v, wrong_v_of_K(K), 0.0])


def test_prm_summary_for_process():
    env = make_env()
    batch, _, (gold, _, _) = prm_batch(env)
    K = len(line_end_tokens(gold))
    prm = PRM(PRMConfig(aggregation="mean"), env=env)
    dense = prm.score(batch)
    close(prm.summarize(dense), [1.0, 1.0 / K, 0.0])


def test_prm_clip_refinement_placed():
    env = make_env()
    batch, _, (gold, wrong, _) = prm_batch(env)
    T = batch["mask"].shape[1]
    K = len(line_end_tokens(gold))
    for eta in (0.5, 1.0):
        scores = PRM(PRMConfig(refinement="clip", clip_threshold=eta), env=env).score(batch)
        good, bad = min(1.0 - eta, 0.0), min(0.0 - eta, 0.0)
        close(scores, expected_dense(T, [(line_end_tokens(gold), [good] * K),
                                         (line_end_tokens(wrong), [good] + [bad] * (K - 1)),
                                         ([0], [bad])]))


def test_prm_delta_refinement_placed():
    env = make_env()
    batch, _, (gold, wrong, _) = prm_batch(env)
    T = batch["mask"].shape[1]
    K = len(line_end_tokens(gold))
    cfg = PRMConfig(refinement="delta", correct=1.0, incorrect=-1.0)
    scores = PRM(cfg, env=env).score(batch)
    # gold: s = [1]*K -> [0]*(K-1) + [1]
    # wrong: s = [1, -1, ..., -1] -> [1 - (-1)] + [0]*(K-2) + [-1]
    # empty: s = [-1] -> [-1]
    close(scores, expected_dense(T, [(line_end_tokens(gold), [0.0] * (K - 1) + [1.0]),
                                     (line_end_tokens(wrong), [2.0] + [0.0] * (K - 2) + [-1.0]),
                                     ([0], [-1.0])]))
    # telescoping on the placed values: the return from the first step is s_1
    assert float(torch.nansum(scores[0])) == pytest.approx(1.0)
    assert float(torch.nansum(scores[1])) == pytest.approx(1.0)


def test_prm_multi_char_tokens():
    env = make_env()
    task = env.sample(1)[0]
    gold = env.demonstration(task)
    assert gold == "3+20=23\n23+2=25\nA:25"
    # tokens of 2 chars, last one 2 chars too: ends 2, 4, ..., 20
    ends = list(range(2, 21, 2))
    batch = Batch({"mask": torch.ones(1, len(ends))}, {"task": [task], "completion": [gold], "token_ends": [ends]})
    scores = PRM(PRMConfig(), env=env).score(batch)
    # step ends (exclusive char offsets) 7, 15, 20 -> tokens holding chars 6, 14, 19 -> 3, 7, 9
    close(scores, expected_dense(len(ends), [([3, 7, 9], [1.0, 1.0, 1.0])]))


# ------------------------------------------------------------------------- combine

class Const(RewardSource):
    granularity = "outcome"

    def __init__(self, values, weight):
        super().__init__(RewardConfig(weight=weight), name="const")
        self.values = values

    def score(self, batch):
        return torch.tensor(self.values)


def test_combine_outcome_and_process():
    env = make_env()
    batch, _, (gold, wrong, _) = prm_batch(env)
    T = batch["mask"].shape[1]
    gold_pos, wrong_pos = line_end_tokens(gold), line_end_tokens(wrong)
    K = len(gold_pos)
    outcome = Const([3.0, NAN, 5.0], weight=2.0)  # NaN: not applicable to sample 1
    prm = PRM(PRMConfig(weight=0.5), env=env)
    summaries = combine([outcome, prm], batch)

    rewards = torch.zeros(3, T)
    placed = torch.zeros(3, T, dtype=torch.bool)
    # process: 0.5 * step score at each step end
    for p in gold_pos:
        rewards[0, p] += 0.5 * 1.0
        placed[0, p] = True
    for k, p in enumerate(wrong_pos):
        rewards[1, p] += 0.5 * (1.0 if k == 0 else 0.0)
        placed[1, p] = True
    placed[2, 0] = True  # empty completion: 0.5 * 0 at token 0
    # outcome: 2 * value at the last masked token (len - 1); the gold answer's last char is
    # also the last step end, so there the two add up: 0.5 * 1 + 2 * 3
    last0 = len(gold) - 1
    assert last0 == gold_pos[-1]
    rewards[0, last0] += 2.0 * 3.0
    rewards[2, 0] += 2.0 * 5.0   # empty: mask has one token, last = 0
    close(batch["rewards"], rewards)
    assert torch.equal(batch["reward_mask"], placed)
    assert batch["rewards"][0, last0].item() == pytest.approx(6.5)
    assert batch["rewards"][2, 0].item() == pytest.approx(10.0)
    close(summaries["const"], [3.0, NAN, 5.0])
    close(summaries["prm"], [1.0, 0.0, 0.0])  # min aggregation
    assert K >= 3


def test_combine_outcome_lands_on_last_masked_token():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0],
                         [1.0, 1.0, 1.0, 1.0],
                         [1.0, 0.0, 0.0, 0.0]])
    batch = Batch({"mask": mask})
    combine([Const([1.0, -2.0, 0.5], weight=1.0), Const([1.0, 1.0, 1.0], weight=-0.5)], batch)
    # both at position len - 1: 1 + (-0.5)*1, -2 + (-0.5), 0.5 + (-0.5)
    close(batch["rewards"], [[0, 0.5, 0, 0], [0, 0, 0, -2.5], [0.0, 0, 0, 0]])
    assert batch["reward_mask"].tolist() == [[False, True, False, False],
                                             [False, False, False, True],
                                             [True, False, False, False]]


def test_combine_rejects_wrong_shapes():
    batch = Batch({"mask": torch.ones(2, 3)})
    with pytest.raises(ValueError):
        combine([Const([1.0, 2.0, 3.0], weight=1.0)], batch)


# --------------------------------------------------------------------- repeated steps

@pytest.mark.parametrize("text, repeats", [
    ("3+20=23\n23+2=25\nA:25", False),          # the gold solution
    ("3+20=23\n3+20=23\n23+2=25\nA:25", True),  # a step written twice in a row
    ("3+20=23\n23+2=25\n3+20=23\nA:25", True),  # ... or later on
    ("3+20=23\n  3+20=23  \nA:25", True),        # surrounding spaces do not make it new
    ("A:25\nA:25", True),                        # the answer line is a step too
    ("3+20=23\n\n\n23+2=25", False),             # empty lines are no steps
    ("3+20=23\n3+20=24", False),                 # verbatim only
    ("", False),
])
def test_repeats_a_step(text, repeats):
    assert repeats_a_step(text) is repeats


def repeat_batch(env: ArithmeticEnv):
    """Char-level tokens, as prm_batch, with a fourth completion that repeats its first step."""
    task = env.sample(1)[0]
    gold = env.demonstration(task)
    first = gold.split("\n")[0]
    completions = [gold, with_wrong_middle_step(gold), "", first + "\n" + gold]
    T = max(len(c) for c in completions)
    mask = torch.zeros(len(completions), T)
    for i, c in enumerate(completions):
        mask[i, : max(len(c), 1)] = 1.0
    token_ends = [list(range(1, len(c) + 1)) for c in completions]
    batch = Batch({"mask": mask}, {"task": [task] * len(completions), "completion": completions,
                                   "token_ends": token_ends})
    return batch, completions


@pytest.mark.parametrize("refinement", ["none", "clip", "delta"])
def test_repeat_frac_is_the_share_of_completions_repeating_a_step(refinement):
    env = make_env()
    batch, completions = repeat_batch(env)
    assert completions[3] == "3+20=23\n3+20=23\n23+2=25\nA:25"
    source = PRM(PRMConfig(refinement=refinement), env=env)
    assert math.isnan(source.metrics()["repeat_frac"])  # nothing scored yet
    source.score(batch)
    assert source.metrics() == {"repeat_frac": 0.25}  # 1 of 4 completions


def test_rule_prm_cannot_be_farmed_by_repeating_a_step():
    # the checker wants the next gold reduction: a repeated step is wrong, and so is
    # everything after it, so the rule backend pays nothing for the repeat
    env = make_env()
    batch, completions = repeat_batch(env)
    scores = PRM(PRMConfig(), env=env).score(batch)
    row = scores[3][~torch.isnan(scores[3])].tolist()
    assert row == [1.0, 0.0, 0.0, 0.0]
    assert sum(row) < float(torch.nansum(scores[0]))  # less than the gold solution's 3
