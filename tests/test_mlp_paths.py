"""plugins/mlp: the hand-written fast path runs only when it reproduces the module tree, the
plain path (the modules called as they are) runs otherwise, and the two agree."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rlx.batch import Batch
from rlx.plugins.mlp import policy as mlp_policy
from rlx.plugins.mlp.policy import MLPPolicy

OBS, N_ACTIONS, ACT_DIM = 4, 3, 2


def make_policy(discrete: bool = True, shared: bool = False, activation: str = "tanh",
                hidden: tuple[int, ...] = (16, 16), seed: int = 0) -> MLPPolicy:
    space = SimpleNamespace(n=N_ACTIONS) if discrete else SimpleNamespace(shape=(ACT_DIM,))
    env = SimpleNamespace(observation_space=SimpleNamespace(shape=(OBS,)), action_space=space)
    cfg = SimpleNamespace(activation=activation, hidden_sizes=list(hidden), shared=shared, ortho_init=True,
                          log_std_init=-0.3, model_dump=lambda: {})
    torch.manual_seed(seed)
    policy = MLPPolicy(cfg, env=env)
    for p in policy.model.parameters():  # away from the near-zero head init, so every term matters
        nn.init.normal_(p, std=0.5)
    return policy


def make_batch(discrete: bool, B: int = 150, T: int = 2) -> Batch:
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(0, N_ACTIONS, (B, T), generator=g) if discrete else torch.randn(B, T, ACT_DIM, generator=g)
    return Batch({"obs": torch.randn(B, T, OBS, generator=g), "actions": actions})


@pytest.fixture
def fast_calls(monkeypatch):
    """Counts calls into the hand-written kernels, as the policy module sees them."""
    calls = {"chains": 0, "categorical": 0}

    def counting(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(mlp_policy, "chains", counting("chains", mlp_policy.chains))
    monkeypatch.setattr(mlp_policy, "categorical_actor_critic",
                        counting("categorical", mlp_policy.categorical_actor_critic))
    return calls


def exercise(policy: MLPPolicy, discrete: bool) -> None:
    """Every entry point that can take the fast path, with a backward where training would."""
    obs = torch.randn(5, OBS)
    with torch.no_grad():
        policy.act(obs)
        policy.value(obs)
        if discrete:
            policy.q_values(obs)
    for entropy in (False, True):
        logp, ent, value = policy.evaluate_actions(make_batch(discrete), entropy=entropy)
        (logp.sum() + value.sum()).backward()


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_standard_config_takes_the_fast_path(discrete, shared, activation, fast_calls):
    policy = make_policy(discrete, shared, activation)
    chain = policy.model.fast_chain()
    assert chain is not None and chain.activation == activation and chain.shared == shared
    exercise(policy, discrete)
    # the module path is never taken: every forward went through the kernels
    fused = discrete and not shared  # evaluate_actions(entropy=False) fuses the whole evaluation
    assert fast_calls["categorical"] == int(fused)
    assert fast_calls["chains"] == 2 + discrete + 2 - fused  # act, value, q_values, two evaluations


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("shared", [False, True])
def test_layernorm_in_the_actor_body_runs_and_the_fast_path_steps_aside(discrete, shared, fast_calls):
    policy = make_policy(discrete, shared)
    net = policy.model
    obs = torch.randn(7, OBS)
    with torch.no_grad():
        before = net(obs)
    fast_calls.update(chains=0, categorical=0)
    norm = nn.LayerNorm(16)
    nn.init.normal_(norm.weight, 1.0, 0.5)
    nn.init.normal_(norm.bias, 0.0, 0.5)
    net.actor_body.insert(1, norm)  # between the first Linear and its activation
    assert net.fast_chain() is None

    with torch.no_grad():
        out, value = net(obs)
        # the edited network, written out by hand
        lin1, lin2 = net.actor_body[0], net.actor_body[3]
        h = torch.tanh(lin2(torch.tanh(F.layer_norm(lin1(obs), (16,), norm.weight, norm.bias))))
        expected_out = net.actor_head(h)
    assert not torch.allclose(out, before[0], atol=1e-3)  # the LayerNorm changed the output ...
    assert torch.allclose(out, expected_out, atol=1e-6)  # ... by being run where it was inserted
    if shared:  # one body: the critic sees it too
        assert torch.allclose(value, net.critic_head(h).squeeze(-1), atol=1e-6)
    else:
        assert torch.allclose(value, before[1])

    exercise(policy, discrete)
    assert fast_calls == {"chains": 0, "categorical": 0}
    norm.weight.grad = None
    policy.evaluate_actions(make_batch(discrete), entropy=False)[0].sum().backward()
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0  # and it trains


class DoubledTanh(nn.Tanh):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.tanh(x)


def _dropout(net: nn.Module) -> None:
    net.actor_body.append(nn.Dropout(0.5))
    net.actor_body.append(nn.Identity())  # keep the Linear/activation count even


EDITS = {
    "dropout": _dropout,
    "custom activation (a Tanh subclass)": lambda net: net.actor_body.__setitem__(1, DoubledTanh()),
    "unsupported activation": lambda net: net.critic_body.__setitem__(3, nn.GELU()),
    "mixed activations": lambda net: net.critic_body.__setitem__(3, nn.ReLU()),
    "head without bias": lambda net: setattr(net.actor_head, "bias", None),
    "forward hook on a layer": lambda net: net.actor_body[2].register_forward_hook(lambda m, i, o: o * 3),
    "forward patched onto the head": lambda net: setattr(net.critic_head, "forward",
                                                         lambda x: F.linear(x, net.critic_head.weight) * 0),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edits_the_chain_does_not_reproduce_run_on_the_plain_path(edit, fast_calls):
    policy = make_policy()
    net = policy.model
    net.train()
    obs = torch.randn(64, OBS)
    before = [t.detach() for t in net(obs)]
    fast_calls.update(chains=0, categorical=0)
    EDITS[edit](net)
    assert net.fast_chain() is None
    torch.manual_seed(0)
    after = net(obs)
    assert fast_calls["chains"] == 0
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(after, before))  # the edit took effect
    torch.manual_seed(0)
    plain = net.forward_plain(obs)
    assert all(torch.equal(a, b) for a, b in zip(after, plain))
    # an edit of the critic alone leaves what reads the actor alone (Q-values) on its chain
    actor_intact = edit in ("unsupported activation", "mixed activations", "forward patched onto the head")
    assert (net.actor_chain() is not None) == actor_intact
    exercise(policy, True)
    assert fast_calls == {"chains": int(actor_intact), "categorical": 0}
    net.eval()  # dropout off: one output to compare
    with torch.no_grad():
        assert torch.allclose(policy.q_values(obs), net.actor_head(net.actor_body(obs)), atol=1e-6)


def test_a_replaced_body_that_is_still_a_chain_stays_fast_and_is_the_one_run(fast_calls):
    """The fast path reads the modules, not the config: a critic body of another depth and
    activation-compatible layers is reproduced, not the one the config described."""
    net = make_policy().model
    obs = torch.randn(300, OBS)
    before = net(obs)[1].detach()
    net.critic_body = nn.Sequential(nn.Linear(OBS, 16), nn.Tanh())
    fast_calls.update(chains=0)
    chain = net.fast_chain()
    assert chain is not None and len(chain.critic) == 4 and len(chain.actor) == 6
    value = net(obs)[1]
    assert fast_calls["chains"] == 1
    assert not torch.allclose(value, before, atol=1e-3)
    assert torch.allclose(value, net.forward_plain(obs)[1], atol=1e-5)


def test_hooks_run_and_the_fast_path_returns_when_they_go(fast_calls):
    policy = make_policy()
    seen = []
    handles = [policy.model.actor_body[0].register_forward_hook(lambda m, i, o: seen.append("layer")),
               policy.model.register_forward_pre_hook(lambda m, i: seen.append("net"))]
    with torch.no_grad():
        policy.act(torch.randn(3, OBS))  # acting skips the module call only where it adds nothing
    assert seen == ["net", "layer"] and fast_calls["chains"] == 0
    for h in handles:
        h.remove()
    assert policy.model.fast_chain() is not None
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: None)  # global hooks count too
    try:
        assert policy.model.fast_chain() is None
    finally:
        handle.remove()


def test_functional_call_uses_the_tensors_it_is_given():
    net = make_policy().model
    params = {k: torch.randn_like(v) for k, v in net.named_parameters()}
    obs = torch.randn(6, OBS)
    fast = torch.func.functional_call(net, params, (obs,))
    net.use_fast_path = False
    plain = torch.func.functional_call(net, params, (obs,))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fast, plain))
    assert not torch.allclose(fast[0], net(obs)[0], atol=1e-3)


def _run(policy: MLPPolicy, fast: bool, discrete: bool, entropy: bool, calls: dict[str, int]):
    policy.model.use_fast_path = fast
    policy.model.zero_grad()
    calls.update(chains=0, categorical=0)
    batch = make_batch(discrete)  # 300 rows: above chain.py's tanh-by-sigmoid threshold
    logp, ent, value = policy.evaluate_actions(batch, entropy=entropy)
    w = torch.randn(3, *logp.shape, generator=torch.Generator().manual_seed(2))
    loss = (logp * w[0]).sum() + (value * w[1]).sum() + ((ent * w[2]).sum() if entropy else 0)
    loss.backward()
    obs = torch.randn(9, OBS, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        acted = policy.act(obs, deterministic=True)
        q = policy.q_values(obs) if discrete else None
    assert (sum(calls.values()) > 0) == fast  # the path asked for is the one that ran
    return ([logp.detach(), ent.detach(), value.detach(), *acted, *([q] if discrete else [])],
            [p.grad.clone() for p in policy.model.parameters()])


@pytest.mark.parametrize("discrete", [True, False])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("entropy", [False, True])
def test_fast_and_plain_paths_agree(discrete, shared, activation, entropy, fast_calls):
    policy = make_policy(discrete, shared, activation)
    outs_fast, grads_fast = _run(policy, True, discrete, entropy, fast_calls)
    outs_plain, grads_plain = _run(policy, False, discrete, entropy, fast_calls)
    for a, b in zip(outs_fast, outs_plain):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
    assert len(grads_fast) == len(grads_plain)
    for a, b in zip(grads_fast, grads_plain):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), (a - b).abs().max()
