"""The two fast paths of the ``hf`` policy give what the plain transformers calls give:
rlx's decode loop picks the same tokens as ``model.generate`` (keyed Gumbel sampling and
greedy, with and without shared prompts, early EOS, min_new_tokens), and scoring rows
that share a prompt with one prompt pass gives the same log-probs, hidden states and
gradients as one pass per row."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

from rlx.plugins.hf import decode
from rlx.plugins.hf.config import HFConfig
from rlx.plugins.hf.policy import HFPolicy, KeyedGumbel
from rlx.plugins.tiny.config import TinyConfig
from rlx.plugins.tiny.policy import CHECKPOINT, TinyPolicy, build_tokenizer

PROMPTS = ["Q:3+20+2\n", "Q:7-4\n", "Q:12*3-5\n", "Q:1+1\n"]


def _random(kind: str) -> torch.nn.Module:
    tok = build_tokenizer()
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    if kind == "qwen2":  # biased q/k/v projections
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    return LlamaForCausalLM(LlamaConfig(**common, attention_bias=True)).eval()  # grouped-query, biased


@pytest.fixture(scope="module")
def tiny():
    return TinyPolicy(TinyConfig())


def _hf_tokens(model, enc, tok, *, T, min_new, seeds, temperature):
    kw = {"logits_processor": LogitsProcessorList([KeyedGumbel(seeds, temperature)])} if seeds else {}
    out = model.generate(**enc, max_new_tokens=T, min_new_tokens=min_new, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw)
    return out[:, enc["input_ids"].shape[1]:]


@pytest.mark.parametrize("kind", ["tiny", "llama", "qwen2"])
@pytest.mark.parametrize("group", [1, 4])
def test_decode_picks_generates_tokens(tiny, kind, group):
    model = tiny.model.eval() if kind == "tiny" else _random(kind)
    tok = tiny.tokenizer
    assert decode.supports(model)
    prompts = [p for p in PROMPTS for _ in range(group)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    seeds = list(range(50, 50 + len(prompts)))
    ended = False
    for sampled in (True, False):
        for T, min_new in ((24, 24), (40, 0), (10, 3)):
            want = _hf_tokens(model, enc, tok, T=T, min_new=min_new, seeds=seeds if sampled else None,
                              temperature=0.7)
            got = decode.sample(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=T,
                                eos=tok.eos_token_id, pad=tok.pad_token_id, min_new_tokens=min_new,
                                temperature=0.7, seeds=seeds if sampled else None)
            assert got.shape == want.shape and torch.equal(got, want), (kind, group, sampled, T, min_new)
            ended |= bool((want == tok.eos_token_id).any())
    if kind == "tiny":  # the trained model ends its answers: finished rows were padded as generate pads them
        assert ended


def test_decode_of_a_model_with_bf16_weights_picks_generates_greedy_tokens(tiny):
    # policy.dtype=bfloat16 on a CPU: the products run in the weights' dtype, the cache in
    # fp32, so the attention output is cast back before the output projection
    model = copy.deepcopy(tiny.model).eval().to(torch.bfloat16)
    tok = tiny.tokenizer
    enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    want = _hf_tokens(model, enc, tok, T=12, min_new=12, seeds=None, temperature=1.0)
    got = decode.sample(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=12, min_new_tokens=12,
                        eos=tok.eos_token_id, pad=tok.pad_token_id)
    assert torch.equal(got, want)


def test_rows_decoded_in_parallel_parts_are_the_same(tiny):
    tok = tiny.tokenizer
    prompts = [p for p in PROMPTS for _ in range(3)] + ["Q:9\n"]  # groups of 3 and a single row
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    seeds = list(range(len(prompts)))
    before = torch.get_num_threads()
    got = {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            parts = decode._chunks(enc["input_ids"], enc["attention_mask"], n)
            assert len(parts) == n and all(p.start % 3 == 0 for p in parts)  # cut between groups only
            got[n] = decode.sample(tiny.model.eval(), enc["input_ids"], enc["attention_mask"], max_new_tokens=30,
                                   eos=tok.eos_token_id, pad=tok.pad_token_id, seeds=seeds)
            assert torch.get_num_threads() == n  # restored after the parallel parts
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got[1], got[2]) and torch.equal(got[1], got[3])


def test_policy_uses_the_loop_only_where_it_applies(tiny, monkeypatch):
    calls = []
    real = decode.sample
    monkeypatch.setattr(decode, "sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    fast = tiny.generate(PROMPTS, max_new_tokens=12, seeds=[1, 2, 3, 4])
    assert calls
    calls.clear()
    plain = TinyPolicy(TinyConfig(sampler="transformers")).generate(PROMPTS, max_new_tokens=12, seeds=[1, 2, 3, 4])
    assert not calls and fast.meta["completion"] == plain.meta["completion"]
    assert torch.equal(fast["mask"], plain["mask"]) and torch.equal(fast["input_ids"], plain["input_ids"])
    # a generation config asking for a logits processor the loop lacks: generate
    penalized = HFPolicy(HFConfig(model=str(CHECKPOINT)))
    penalized.model.generation_config.repetition_penalty = 1.3
    assert not decode.supports(penalized.model)
    penalized.generate(PROMPTS, max_new_tokens=6, greedy=True)
    assert not calls


def test_cpu_noise_drawn_in_blocks_continues_each_rows_stream():
    cpu = torch.device("cpu")
    assert decode.noise_block(cpu, 4, 23) > 1 and decode.noise_block(torch.device("cuda"), 4, 23) == 1
    block = decode.gumbel(decode.keyed_generators([3, 5], cpu), 3, 23)
    gens = decode.keyed_generators([3, 5], cpu)
    steps = torch.cat([decode.gumbel(gens, 1, 23) for _ in range(3)], 1)
    assert torch.equal(block, steps)


def test_groups_finds_runs_of_repeated_prompts():
    ids = torch.tensor([[0, 5], [0, 5], [6, 7], [6, 7], [6, 7], [0, 5]])
    attn = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1], [1, 1], [0, 1]])
    first, of = decode.groups(ids, attn)
    assert first.tolist() == [0, 2, 5] and of.tolist() == [0, 0, 1, 1, 1, 2]
    assert decode.groups(ids[[0, 2, 5]], attn[[0, 2, 5]]) is None  # nothing repeats: one pass per row


def test_shared_prompt_scoring_matches_per_row_scoring(tiny, monkeypatch):
    prompts = [p for p in PROMPTS for _ in range(4)]
    batch = tiny.generate(prompts, max_new_tokens=20, seeds=list(range(len(prompts))))
    assert (batch["mask"] == 0).any()  # some rows ended early: padding inside the completion part
    # the shared path quietly falls back to one pass per row when it finds no usable KV cache in
    # the model's output: the comparison below would then be of one path with itself
    shared = []
    real = tiny._forward_shared
    monkeypatch.setattr(tiny, "_forward_shared", lambda *a, **k: shared.append(real(*a, **k)) or shared[-1])
    separate = TinyPolicy(TinyConfig())
    separate.config.share_prompts = separate.config.packing = False
    results = []
    for pol in (tiny, separate):
        pol.model.train()
        pol.add_value_head()
        logp, ent, value = pol.evaluate_actions(batch)
        logp2, _ = pol.log_probs(batch)
        (logp * batch["mask"]).sum().backward()
        grads = {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}
        pol.model.zero_grad(set_to_none=True)
        results.append((logp.detach(), logp2.detach(), ent.detach(), value.detach(), grads))
    (a, a2, ea, va, ga), (b, b2, eb, vb, gb) = results
    assert len(shared) == 2 and all(out is not None for out in shared)  # evaluate_actions and log_probs
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a2, b2, atol=1e-5) and torch.allclose(a, a2, atol=1e-6)
    assert torch.allclose(ea, eb, atol=1e-4) and torch.allclose(va, vb, atol=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for n in ga:
        assert float((ga[n] - gb[n]).norm()) <= 1e-4 * float(gb[n].norm()) + 1e-7, n


@pytest.mark.parametrize("kind", ["tiny", "llama"])
def test_decode_in_bf16_picks_what_the_model_under_autocast_rates_best(tiny, kind):
    """run.precision=bf16: the loop casts its matrices to bf16 once and keeps the residual
    stream and norms in fp32, as autocast does; bf16 rounds differently in the two, so
    tokens are not compared bit for bit: each greedy token the loop picks is the best, up to
    bf16 rounding, of the model's own forward under autocast over the same sequence."""
    model = tiny.model.eval() if kind == "tiny" else _random(kind)
    tok = tiny.tokenizer
    prompts = [p for p in PROMPTS for _ in range(2)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, attn = enc["input_ids"], enc["attention_mask"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decode.compute_dtype(model) == torch.bfloat16
        got = decode.sample(model, ids, attn, max_new_tokens=16, eos=tok.eos_token_id, pad=tok.pad_token_id)
        full, mask = torch.cat([ids, got], 1), torch.cat([attn, torch.ones_like(got)], 1)
        with torch.no_grad():
            logits = model(input_ids=full, attention_mask=mask,
                           position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, ids.shape[1] - 1:-1].float()
    is_eos = got == tok.eos_token_id
    live = (is_eos.cumsum(-1) - is_eos.long()) == 0  # up to and with the first EOS
    picked = logits.gather(-1, got[..., None])[..., 0]
    gap = (logits.max(-1).values - picked)[live]
    assert float((gap == 0).float().mean()) >= 0.9, gap
    assert float(gap.max()) <= 0.05 * float(logits.abs().max()), gap
    with torch.no_grad():
        fp32 = model(input_ids=full, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert not torch.equal(fp32[:, ids.shape[1] - 1:-1], logits)  # the reference really ran in bf16


@pytest.mark.parametrize("kind", ["tiny", "llama"])
def test_written_out_attention_scores_as_sdpa_does(tiny, kind, monkeypatch):
    """``policy.attention=rlx`` (the default): in bf16 on a CPU the scoring passes write
    attention out instead of calling SDPA, and rotate queries and keys in bf16. Log-probs
    and gradients are as close to fp32 as transformers' own bf16 ones, left-padded rows give
    no NaN, grouped-query heads are read right; in fp32, and past ``WRITTEN_OUT_SCORES``,
    SDPA runs and the results are SDPA's exactly."""
    import copy
    import types

    from rlx.plugins.hf import attention

    base = copy.deepcopy(tiny.model) if kind == "tiny" else _random(kind)
    for m in base.modules():  # the shared fixture's model came through a policy: undo its paths
        vars(m).pop("forward", None)
    base.set_attn_implementation("sdpa")
    plain = HFPolicy(HFConfig(attention="model"), model=copy.deepcopy(base), tokenizer=tiny.tokenizer)
    rotated = HFPolicy(HFConfig(attention="model"), model=copy.deepcopy(base), tokenizer=tiny.tokenizer)
    rotary = rotated.model.model.rotary_emb
    rotary.forward = types.MethodType(attention._rotary_forward, rotary)  # SDPA after the same rotation
    fast = HFPolicy(HFConfig(), model=copy.deepcopy(base), tokenizer=tiny.tokenizer)
    assert plain.model.config._attn_implementation == "sdpa"
    assert fast.model.config._attn_implementation == attention.NAME
    prompts = [p for p in PROMPTS for _ in range(3)]  # unequal lengths: left padding; groups: shared prompts
    completions = ["12", "4+5=9", "x", "31", "0", "123456", "7", "88", "5", "2", "2+2", "44"]
    batch = plain.encode(prompts, completions)
    assert (batch["attention_mask"] == 0).any()
    calls = []
    real = attention.written_out
    monkeypatch.setattr(attention, "written_out", lambda *a: calls.append(1) or real(*a))

    def score(pol, dtype):
        pol.model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logp, _ = pol.log_probs(batch)
        (logp * batch["mask"]).sum().backward()
        return logp.detach(), {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}

    exact, g_exact = score(plain, torch.float32)
    a, ga = score(plain, torch.bfloat16)
    assert not calls
    b, gb = score(fast, torch.bfloat16)
    assert len(calls) == 2 * base.config.num_hidden_layers  # the prompt pass and the completion pass
    live = batch["mask"].bool()
    assert torch.isfinite(b).all() and not torch.equal(a, b)
    # bf16 rounds differently in the two: each is held to its distance from fp32
    err_a, err_b = (a - exact)[live].abs(), (b - exact)[live].abs()
    assert float(err_b.max()) <= 1.5 * float(err_a.max()) and float(err_b.mean()) <= 1.5 * float(err_a.mean())
    assert ga.keys() == gb.keys() == g_exact.keys() and len(ga) > 5
    for n in ga:
        scale = float(g_exact[n].norm()) + 1e-6
        assert float((gb[n] - g_exact[n]).norm()) <= 1.5 * float((ga[n] - g_exact[n]).norm()) + 0.01 * scale, n
    calls.clear()
    b, _ = score(fast, torch.float32)
    assert not calls and torch.equal(exact, b)
    monkeypatch.setattr(attention, "WRITTEN_OUT_SCORES", 0)
    a, _ = score(rotated, torch.bfloat16)
    b, _ = score(fast, torch.bfloat16)
    assert not calls and torch.equal(a, b)


@pytest.mark.parametrize("kind", ["tiny", "qwen2"])
def test_fused_norms_give_the_same_values(tiny, kind):
    """``policy.fused_norms`` (the default): RMSNorm through torch's fused kernel gives the
    log-probs and gradients of transformers' own layers, bit for bit in fp32 and under bf16
    autocast."""
    import copy

    from rlx.plugins.hf import norms

    base = copy.deepcopy(tiny.model) if kind == "tiny" else _random(kind)
    for m in base.modules():  # the shared fixture's model came through a policy: undo its norms
        vars(m).pop("forward", None)
    plain = HFPolicy(HFConfig(fused_norms=False), model=copy.deepcopy(base), tokenizer=tiny.tokenizer)
    fast = HFPolicy(HFConfig(), model=copy.deepcopy(base), tokenizer=tiny.tokenizer)
    assert norms.use(copy.deepcopy(plain.model)) == 2 * base.config.num_hidden_layers + 1
    assert all("forward" not in vars(m) for m in plain.model.modules() if type(m).__name__ in norms._SAME)
    batch = plain.encode([p for p in PROMPTS for _ in range(2)], ["12", "4+5=9", "x", "31", "0", "123", "7", "88"])
    for dtype in (torch.float32, torch.bfloat16):
        got = []
        for pol in (plain, fast):
            pol.model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                logp, _ = pol.log_probs(batch)
            (logp * batch["mask"]).sum().backward()
            got.append((logp.detach(), {n: p.grad for n, p in pol.model.named_parameters() if p.grad is not None}))
        (a, ga), (b, gb) = got
        assert torch.equal(a, b), dtype
        assert ga.keys() == gb.keys() and len(ga) > 5
        for n in ga:
            assert torch.allclose(ga[n], gb[n], rtol=1e-5, atol=1e-7), (dtype, n)


@pytest.mark.parametrize("kind", ["tiny", "qwen2"])
def test_bf16_decode_with_packed_matrices_picks_the_plain_tokens(tiny, kind, monkeypatch):
    """In bf16 on a CPU the loop hands its matrices to oneDNN laid out once (``decode.packs``);
    the tokens are those of the plain ``F.linear`` path, bit for bit."""
    if not decode.packs(torch.bfloat16, torch.device("cpu")):
        pytest.skip("this torch build or CPU has no oneDNN packed bf16 linear")
    model = tiny.model.eval() if kind == "tiny" else _random(kind)
    if kind == "qwen2":  # its q/k/v biases start at zero: make them count
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    tok = tiny.tokenizer
    enc = tok([p for p in PROMPTS for _ in range(3)], return_tensors="pt", padding=True, add_special_tokens=False)
    got = {}
    for pack in (True, False):
        monkeypatch.setattr(decode, "PACK", pack)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            w = decode._Layers(model, decode.compute_dtype(model), 12)
            assert (w.linear is not torch.nn.functional.linear) == pack
            got[pack] = decode.sample(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=20,
                                      eos=tok.eos_token_id, pad=tok.pad_token_id, seeds=list(range(12)))
    assert torch.equal(got[True], got[False])


def test_packed_matrices_only_where_the_cpu_has_the_instructions_onednn_needs(monkeypatch):
    """oneDNN's packed bf16 linear raises on a CPU without AVX-NE-CONVERT or AVX512 BW, VL
    and DQ (an AVX2-only CPU): there the loop keeps ``F.linear``."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        pytest.skip("this torch build has no oneDNN packed linear")
    cpu = torch.device("cpu")
    avx2 = {"avx": True, "avx2": True, "avx512_bw": False, "avx512_vl": False, "avx512_dq": False,
            "avx_ne_convert": False}
    for caps, expected in ((avx2, False), ({**avx2, "avx_ne_convert": True}, True),
                           ({**avx2, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}, True),
                           ({**avx2, "avx512_bw": True, "avx512_vl": True}, False)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        assert decode.packs(torch.bfloat16, cpu) is expected, caps
        assert not decode.packs(torch.float32, cpu)


def _ragged_batch(policy):
    """Prompts and completions of very different lengths: much of the padded batch is padding;
    the last three rows repeat the first three prompts (not next to them, as DPO lays out)."""
    prompts = ["Q:1+2\n", "Q:12+30*2-7\n", "Q:7*8\n", "Q:100-1-2-3+4\n", "Q:5\n", "Q:9*9\n"]
    completions = ["A:3", "30*2=60\n12+60=72\n72-7=65\nA:65", "7*8=56\nA:56", "A:98", "A:5", "9*9=81\nA:81"]
    return policy.encode(prompts + prompts[:3], completions + ["1+2=4\nA:4", "A:6", "7*8=54\nA:54"])


def test_packing_lays_each_prompt_out_once_and_each_completion_after_it():
    from rlx.plugins.hf import packing

    # rows 0 and 1 share the prompt [3, 1, 4]; row 2 has its own; the last 3 columns are actions
    ids = torch.tensor([[0, 3, 1, 4, 7, 8, 9], [0, 3, 1, 4, 5, 6, 0], [0, 0, 2, 2, 7, 0, 0]])
    attn = (torch.arange(7) >= torch.tensor([[1], [1], [2]])).long() * torch.tensor([[1] * 7, [1] * 6 + [0], [1] * 5 + [0, 0]])
    packed = packing.lay_out(ids, attn, 3, width=16)
    assert packed is not None and packed.ids.shape == (1, 16)
    flat, pos = packed.ids[0].tolist(), packed.positions[0].tolist()
    # the shared unit: prompt once, then each completion without its last token, positions
    # counting on from the prompt
    u = flat.index(3)
    assert flat[u:u + 7] == [3, 1, 4, 7, 8, 5] + flat[u + 6:u + 7] and pos[u:u + 6] == [0, 1, 2, 3, 4, 3]
    mask = packed.mask[0, 0]
    assert mask[u + 5, u + 2] and not mask[u + 5, u + 3] and not mask[u + 5, u + 4]  # row 1 sees its prompt, not row 0
    assert mask[u + 4, u + 3] and not mask[u + 2, u + 3]  # causal
    other = flat.index(2)
    assert not mask[other + 1, u].any() and not mask[u + 1, other]  # units apart
    assert packed.source.tolist()[0] == [u + 2, u + 3, u + 4] and packed.source.tolist()[1] == [u + 2, u + 5, -1]
    assert packed.source.tolist()[2] == [other + 1, -1, -1]
    unshared = packing.lay_out(ids, attn, 3, share_prompts=False, width=16)
    assert unshared is not None and unshared.ids[0].tolist().count(3) == 2
    full = torch.ones(3, 7, dtype=torch.long)
    assert packing.lay_out(ids, full, 3, share_prompts=False) is None  # no padding to save


@pytest.mark.parametrize("kind", ["tiny", "llama", "qwen2"])
def test_packed_scoring_matches_padded_scoring(tiny, kind, monkeypatch):
    """log_probs, entropies, values and gradients of a batch with much padding, packed and
    padded (the plain path)."""
    laid = []
    real = HFPolicy._forward_packed
    monkeypatch.setattr(HFPolicy, "_forward_packed", lambda *a, **k: laid.append(real(*a, **k)) or laid[-1])
    results = []
    for packs in (True, False):
        if kind == "tiny":
            pol = TinyPolicy(TinyConfig(packing=packs))
        else:
            pol = HFPolicy(HFConfig(packing=packs), model=_random(kind), tokenizer=build_tokenizer())
        pol.model.train()
        pol.add_value_head()
        batch = _ragged_batch(pol)
        logp, ent, value = pol.evaluate_actions(batch)
        logp2, _ = pol.log_probs(batch)
        (logp * batch["mask"]).sum().backward()
        grads = {n: p.grad.clone() for n, p in pol.model.named_parameters() if p.grad is not None}
        m = batch["mask"]
        results.append((logp.detach() * m, logp2.detach() * m, ent.detach() * m, value.detach() * m, grads))
    assert len(laid) == 2 and all(out is not None for out in laid)  # both calls of the first policy packed
    (a, a2, ea, va, ga), (b, b2, eb, vb, gb) = results
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(a2, b2, rtol=0, atol=1e-5)
    torch.testing.assert_close(ea, eb, rtol=0, atol=1e-4)
    torch.testing.assert_close(va, vb, rtol=0, atol=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for n in ga:
        assert float((ga[n] - gb[n]).norm()) <= 1e-4 * float(gb[n].norm()) + 1e-7, n


def test_a_model_that_ignores_the_packed_mask_is_not_packed(monkeypatch):
    """Where the model does not take the 4D mask packing builds (as flash attention does
    not), a packed row would let a sequence attend to the one before it: the policy
    notices and pads."""
    import transformers.models.llama.modeling_llama as llama

    from rlx.plugins.hf import packing

    plain = TinyPolicy(TinyConfig(packing=False))
    batch = _ragged_batch(plain)
    with torch.no_grad():
        want = plain.log_probs(batch)[0] * batch["mask"]
    real = llama.create_causal_mask

    def causal_only(*args, **kwargs):  # a 4D mask read as no mask: plain causal over the row
        if kwargs.get("attention_mask") is not None and kwargs["attention_mask"].dim() == 4:
            kwargs["attention_mask"] = None
        return real(*args, **kwargs)

    monkeypatch.setattr(llama, "create_causal_mask", causal_only)
    assert not packing.keeps_rows_apart(plain.model)
    pol = TinyPolicy(TinyConfig())
    with torch.no_grad():
        got = pol.log_probs(batch)[0] * batch["mask"]
    assert pol._packs is False
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
