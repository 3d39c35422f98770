"""DPO's fast scoring (interleaved pair rows sharing a prompt pass, length groups without
padding columns: plugins/dpo/scoring.py; the policy's packed rows: policy.packing) against
the plain path, one padded pass over the batch as laid out, on the tiny checkpoint: the
same per-row log-probs, losses and gradients."""

from __future__ import annotations

import pytest
import torch

from rlx.batch import Batch
from rlx.plugins.dpo.config import DPOConfig
from rlx.plugins.dpo.objective import DPO
from rlx.plugins.dpo.scoring import length_groups, pair_log_probs
from rlx.plugins.text.kinds import encode_pairs

# hand-made pairs: prompts of different lengths, a chosen side longer than its rejected one
# and the other way round, one pair of equal sides, two pairs with the same prompt
HAND = [
    {"prompt": "Q:1+2\n", "chosen": "A:3", "rejected": "1+2=4\nA:4", "id": -1},
    {"prompt": "Q:12+30*2\n", "chosen": "30*2=60\n12+60=72\nA:72", "rejected": "A:7", "id": -1},
    {"prompt": "Q:7*8\n", "chosen": "7*8=56\nA:56", "rejected": "7*8=54\nA:54", "id": -1},
    {"prompt": "Q:1+2\n", "chosen": "1+2=3\nA:3", "rejected": "A:4", "id": -1},
    {"prompt": "Q:100-1-2-3\n", "chosen": "100-1=99\n99-2=97\n97-3=94\nA:94", "rejected": "A:9", "id": -1},
]


@pytest.fixture(scope="module")
def policy():
    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    torch.manual_seed(0)
    p = TinyPolicy(TinyConfig(packing=False))  # the plain path pads; tests that pack say so
    p.model.eval()  # no dropout either way; the comparison is of the arithmetic
    return p


@pytest.fixture(scope="module")
def pairs():
    from rlx.plugins.preferences.env import PreferencesEnv

    return PreferencesEnv(seed=0).sample(12) + HAND


def _lengths(batch: Batch) -> tuple[list[int], list[int]]:
    T = batch["actions"].shape[1]
    return batch["attention_mask"][:, :-T].sum(-1).tolist(), batch["mask"].sum(-1).int().tolist()


def test_batch_has_rows_of_different_lengths(policy, pairs):
    prompt, completion = _lengths(encode_pairs(policy, pairs))
    n = len(pairs)
    assert len(set(prompt)) > 2 and len(set(completion)) > 4
    assert any(c > r for c, r in zip(completion[:n], completion[n:]))
    assert any(c < r for c, r in zip(completion[:n], completion[n:]))


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 16])
def test_per_row_log_probs_match_the_plain_path(policy, pairs, groups):
    batch = encode_pairs(policy, pairs)
    with torch.no_grad():
        plain = pair_log_probs(policy, batch, 0) * batch["mask"]
        fast = pair_log_probs(policy, batch, groups)
    assert fast.shape == plain.shape
    assert torch.equal(fast[batch["mask"] == 0], torch.zeros_like(fast[batch["mask"] == 0]))
    torch.testing.assert_close(fast, plain, rtol=0, atol=2e-5)
    torch.testing.assert_close(fast.sum(-1), plain.sum(-1), rtol=0, atol=1e-4)


def test_chosen_and_rejected_of_different_lengths(policy):
    # every pair's sides differ in length, the longest completion on the rejected side
    part = [HAND[0], HAND[1], HAND[4]]
    batch = encode_pairs(policy, part)
    _, completion = _lengths(batch)
    assert all(c != r for c, r in zip(completion[:3], completion[3:]))
    with torch.no_grad():
        torch.testing.assert_close(pair_log_probs(policy, batch, 2), pair_log_probs(policy, batch, 0) * batch["mask"],
                                   rtol=0, atol=2e-5)


def test_prompts_are_shared_and_padding_dropped(policy, pairs, monkeypatch):
    """The fast path reaches the policy's shared-prompt pass and feeds it fewer slots."""
    from rlx.plugins.hf.policy import HFPolicy

    seen: list[tuple[int, int]] = []
    shared = {"n": 0}
    forward, forward_shared = HFPolicy._forward, HFPolicy._forward_shared

    def spy(self, batch, *a, **k):
        seen.append(tuple(batch["input_ids"].shape))
        return forward(self, batch, *a, **k)

    def spy_shared(self, *a, **k):
        shared["n"] += 1
        return forward_shared(self, *a, **k)

    monkeypatch.setattr(HFPolicy, "_forward", spy)
    monkeypatch.setattr(HFPolicy, "_forward_shared", spy_shared)
    batch = encode_pairs(policy, pairs)
    with torch.no_grad():
        pair_log_probs(policy, batch, 0)
        assert shared["n"] == 0 and seen == [tuple(batch["input_ids"].shape)]
        seen.clear()
        pair_log_probs(policy, batch, 3)
    assert shared["n"] == len(seen) > 1
    assert sum(r * w for r, w in seen) < batch["input_ids"].numel()


def test_length_groups_cover_every_pair_once():
    prompt = [9, 8, 13, 10, 12, 9, 11]
    completion = [21, 4, 31, 16, 27, 5, 19]
    costs = []
    for g in (1, 2, 3, 7, 20):
        runs = length_groups(prompt, completion, g)
        assert 1 <= len(runs) <= g
        assert sorted(i for r in runs for i in r) == list(range(7))
        costs.append(sum(len(r) * (max(prompt[i] for i in r) + 2 * max(completion[i] for i in r)) for r in runs))
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    assert costs[-2] == sum(p + 2 * c for p, c in zip(prompt, completion))  # one pair a run: no padding
    assert length_groups([], [], 3) == []


def _grads(policy) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in policy.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("settings", [{}, {"loss_type": "ipo", "nll_weight": 1.0},
                                      {"divergence": "js", "label_smoothing": 0.1, "length_groups": 1},
                                      {"packed": True}, {"packed": True, "loss_type": "ipo", "nll_weight": 1.0}])
def test_loss_and_gradients_match_the_plain_path(policy, pairs, settings):
    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    settings = dict(settings)
    packed = settings.pop("packed", False)
    reference = TinyPolicy(TinyConfig(packing=False))
    with torch.no_grad():  # a policy a step away from its reference, so the log-ratios are not all 0
        for p in policy.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 1e-2)
    results = []
    # the plain path, then the fast one: length groups, or one pass the policy packs
    for groups, packs in ((0, False), (0, True) if packed else (settings.get("length_groups", 3), False)):
        policy.config.packing = reference.config.packing = packs
        obj = DPO(DPOConfig(**{**settings, "length_groups": groups}))
        batch = encode_pairs(policy, pairs)
        obj.prepare(batch, policy, reference)
        policy.model.zero_grad(set_to_none=True)
        loss, metrics = obj.loss(policy, batch)
        loss.backward()
        results.append((batch["ref_logps"], loss.detach(), metrics, _grads(policy)))
    policy.config.packing = False
    assert not packed or policy._packs is True  # the packed run really packed
    (ref0, loss0, m0, g0), (ref1, loss1, m1, g1) = results
    torch.testing.assert_close(ref1, ref0, rtol=0, atol=1e-4)
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-6)
    assert abs(float(loss0) - float(torch.log(torch.tensor(2.0)))) > 1e-4  # not the trivial policy = reference
    for k in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        torch.testing.assert_close(m1[k], m0[k], rtol=1e-5, atol=1e-5)
    assert g0.keys() == g1.keys() and g0
    for k in g0:
        scale = float(g0[k].abs().max()) + 1e-12
        torch.testing.assert_close(g1[k] / scale, g0[k] / scale, rtol=0, atol=2e-4, msg=k)
    policy.model.zero_grad(set_to_none=True)


def test_held_out_metrics_match_the_plain_path(policy, pairs):
    class Env:
        def eval_pairs(self):
            return pairs

    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    reference = TinyPolicy(TinyConfig(packing=False))
    with torch.no_grad():
        for p in reference.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel() + 1)) * 1e-2)
    out = [DPO(DPOConfig(length_groups=g)).held_out_metrics(Env(), policy, reference, chunk=7) for g in (0, 3)]
    assert out[0]["eval/reward_margin"] != 0
    assert out[0]["eval/preference_accuracy"] == out[1]["eval/preference_accuracy"]
    assert out[1]["eval/reward_margin"] == pytest.approx(out[0]["eval/reward_margin"], abs=1e-5)
