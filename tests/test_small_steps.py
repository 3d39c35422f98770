"""The fast paths of control training against what they replace: the flat clip + AdamW
step against torch's, the hand-written MLP backward against autograd, Gumbel-max sampling
against the softmax, and the lean vector env against gymnasium's."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from rlx.small_steps import SmallSteps, clip_grads


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


@pytest.mark.parametrize("max_norm", [0.05, float("inf")])
def test_small_steps_match_torch_across_a_checkpoint(max_norm):
    ref, fast = _net(), _net()
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    opt_fast = torch.optim.AdamW(fast.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_fast, lambda s: 1.0 - s / 40)
    sched_ref = torch.optim.lr_scheduler.LambdaLR(opt_ref, lambda s: 1.0 - s / 40)
    steps = SmallSteps(opt_fast, opt_fast.param_groups[0]["params"])
    assert steps.fused
    g = torch.Generator().manual_seed(1)
    for i in range(25):
        x = torch.randn(32, 4, generator=g)
        for net in (ref, fast):
            net(x).square().mean().backward()
        n_ref = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), max_norm, foreach=True)
        n_fast = steps.clip(max_norm)
        # one norm over all gradients sums in another order than per-tensor norms
        assert torch.allclose(n_ref, n_fast, rtol=1e-6, atol=0)
        opt_ref.step()
        steps.step()
        for opt in (opt_ref, opt_fast):
            opt.zero_grad(set_to_none=True)
        sched.step()
        sched_ref.step()
        if i == 10:  # a checkpoint round trip replaces the state: the lists are rebuilt
            buf = io.BytesIO()
            torch.save(opt_fast.state_dict(), buf)
            buf.seek(0)
            opt_fast.load_state_dict(torch.load(buf))
    for a, b in zip(ref.parameters(), fast.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(ref.parameters(), _net().parameters()))  # it did train
    assert steps._state is not None  # the fused call was taken
    assert {float(s["step"]) for s in opt_fast.state.values()} == {25.0}


def test_clip_matches_torch():
    ps = [torch.nn.Parameter(torch.randn(5)) for _ in range(3)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    for p, q in zip(ps, qs):
        p.grad = torch.randn(5)
        q.grad = p.grad.clone()
    assert torch.equal(clip_grads(ps, 0.3), torch.nn.utils.clip_grad_norm_(qs, 0.3, foreach=True))
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(ps, qs))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("linear_last", [True, False])
def test_mlp_chains_backward_matches_autograd(activation, linear_last):
    from rlx.plugins.mlp.chain import chains

    g = torch.Generator().manual_seed(0)

    def layer(o, i):
        return [torch.randn(o, i, generator=g, dtype=torch.float64, requires_grad=True),
                torch.randn(o, generator=g, dtype=torch.float64, requires_grad=True)]

    x = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    actor, critic = layer(6, 5) + layer(3, 6), layer(4, 5) + layer(4, 4) + layer(1, 4)
    assert torch.autograd.gradcheck(lambda x, *p: chains(x, [p[:4], p[4:]], activation, linear_last),
                                    (x, *actor, *critic))
    # and the forward is the plain network's, in both the tanh-by-sigmoid and the tanh range
    act = torch.tanh if activation == "tanh" else torch.relu
    for rows in (7, 400):
        xs = torch.randn(rows, 5, generator=g, dtype=torch.float64)
        ref = xs
        for i in range(0, len(critic), 2):
            ref = torch.nn.functional.linear(ref, critic[i], critic[i + 1])
            if i < len(critic) - 2 or not linear_last:
                ref = act(ref)
        with torch.no_grad():
            assert torch.allclose(chains(xs, [critic], activation, linear_last)[0], ref, atol=1e-12)


def test_gumbel_max_sampling_follows_the_softmax():
    from types import SimpleNamespace

    from rlx.plugins.mlp.policy import ActorCritic

    cfg = SimpleNamespace(activation="tanh", hidden_sizes=[8], shared=False, ortho_init=True, log_std_init=0.0)
    net = ActorCritic(3, 3, True, cfg)
    logits = torch.tensor([[0.0, 1.0, -1.0]]).expand(40_000, 3)
    torch.manual_seed(0)
    freq = torch.bincount(net.sample(logits), minlength=3).double() / 40_000
    assert torch.allclose(freq, torch.softmax(logits[0].double(), -1), atol=0.01)


def test_sync_vector_env_matches_gymnasium():
    import gymnasium as gym

    from rlx.plugins.gym.vector import SyncVector

    n = 4
    ours = SyncVector([lambda: gym.make("CartPole-v1")] * n)
    theirs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * n,
                                      autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    o1, _ = ours.reset(seed=3)
    o2, _ = theirs.reset(seed=3)
    assert np.array_equal(o1, o2)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(300):
        a = rng.integers(0, 2, n)
        s1, s2 = ours.step(a), theirs.step(a)
        for x, y in zip(s1[:4], s2[:4]):
            assert np.array_equal(x, y)
        for i in np.flatnonzero(s1[2] | s1[3]):
            assert np.array_equal(s1[4]["final_obs"][i], s2[4]["final_obs"][i])
            ends += 1
    assert ends > 10  # episodes ended and reset along the way
    ours.close()
    theirs.close()


def test_fused_categorical_evaluation_matches_the_module_path():
    from types import SimpleNamespace

    from rlx.batch import Batch
    from rlx.plugins.mlp.policy import MLPPolicy

    env = SimpleNamespace(observation_space=SimpleNamespace(shape=(4,)), action_space=SimpleNamespace(n=3))
    cfg = SimpleNamespace(activation="tanh", hidden_sizes=[16, 16], shared=False, ortho_init=True, log_std_init=0.0,
                          model_dump=lambda: {})
    torch.manual_seed(0)
    policy = MLPPolicy(cfg, env=env)
    for p in policy.model.parameters():  # away from the near-zero head init, so every term matters
        torch.nn.init.normal_(p, std=0.5)
    batch = Batch({"obs": torch.randn(40, 1, 4), "actions": torch.randint(0, 3, (40, 1))})
    weights = torch.randn(2, 40, 1)
    results = []
    for fused in (True, False):
        policy.model.zero_grad()
        logp, ent, value = policy.evaluate_actions(batch, entropy=not fused)  # entropy=True: the module path
        ((logp * weights[0]).sum() + (value * weights[1]).sum()).backward()
        results.append((logp.detach(), ent.detach(), value.detach(),
                        [p.grad.clone() for p in policy.model.parameters()]))
    (l1, e1, v1, g1), (l2, e2, v2, g2) = results
    assert l1.shape == v1.shape == e1.shape == (40, 1)
    assert torch.allclose(l1, l2, atol=1e-6) and torch.allclose(v1, v2, atol=1e-6) and torch.allclose(e1, e2, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2))


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_actor_critic_matches_its_module_tree(shared, activation):
    """The fast forward (and its written-out backward) against calling the registered
    nn.Sequential bodies and heads, which is what state_dict and printing describe."""
    from types import SimpleNamespace

    from rlx.plugins.mlp.policy import ActorCritic

    cfg = SimpleNamespace(activation=activation, hidden_sizes=[32, 32], shared=shared, ortho_init=True,
                          log_std_init=0.0)
    torch.manual_seed(0)
    net = ActorCritic(4, 2, True, cfg).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    obs = torch.randn(300, 4, dtype=torch.float64)  # above the tanh-by-sigmoid threshold
    results = []
    for fast in (True, False):
        net.zero_grad()
        if fast:
            out, value = net(obs)
        else:
            out = net.actor_head(net.actor_body(obs))
            value = net.critic_head(net.critic_body(obs)).squeeze(-1)
        (out.square().sum() + value.sum()).backward()
        results.append((out.detach(), value.detach(), [p.grad.clone() for p in net.parameters()]))
    (o1, v1, g1), (o2, v2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-12) and torch.allclose(v1, v2, atol=1e-12)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g1, g2))


def test_small_steps_leave_parameters_without_gradients_alone():
    """An objective that trains part of the network (DQN: the Q head of an actor-critic,
    never its critic): the fused step on the parameters with gradients matches torch's
    step, which skips the others, and the others keep their values and have no state."""
    trained, idle = _net(), torch.nn.Linear(4, 2)
    ref_trained, ref_idle = _net(), torch.nn.Linear(4, 2)
    ref_idle.load_state_dict(idle.state_dict())
    params = [*trained.parameters(), *idle.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-2, fused=True)
    opt_ref = torch.optim.AdamW([*ref_trained.parameters(), *ref_idle.parameters()], lr=1e-2, fused=True)
    steps = SmallSteps(opt, opt.param_groups[0]["params"])
    g = torch.Generator().manual_seed(2)
    for _ in range(6):
        x = torch.randn(16, 4, generator=g)
        for net in (trained, ref_trained):
            net(x).square().mean().backward()
        assert torch.allclose(steps.clip(0.1), torch.nn.utils.clip_grad_norm_(list(ref_trained.parameters()), 0.1))
        steps.step()
        opt_ref.step()
        for o in (opt, opt_ref):
            o.zero_grad(set_to_none=True)
    assert steps._state is not None  # the fused call was taken
    for a, b in zip(trained.parameters(), ref_trained.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(idle.parameters(), ref_idle.parameters()))
    assert not any(opt.state.get(p) for p in idle.parameters())


def test_clip_of_many_numbers_matches_the_concatenated_norm():
    """Above the concatenation threshold the norm is taken per tensor: the same value."""
    from rlx.small_steps import _CONCAT_UP_TO

    big = torch.nn.Linear(256, 256)
    opt = torch.optim.AdamW(big.parameters(), fused=True)
    steps = SmallSteps(opt, opt.param_groups[0]["params"])
    assert sum(p.numel() for p in big.parameters()) > _CONCAT_UP_TO and not steps._concat
    big(torch.randn(8, 256)).square().sum().backward()
    want = torch.linalg.vector_norm(torch.cat([p.grad.reshape(-1) for p in big.parameters()]))
    assert torch.allclose(steps.clip(float("inf")), want, rtol=1e-6)
