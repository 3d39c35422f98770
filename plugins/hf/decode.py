"""Sampling from a Llama-style causal LM with a preallocated KV cache and no per-token
framework overhead: the generation path of :class:`~rlx.plugins.hf.policy.HFPolicy`.

Why not ``model.generate``: on small models it spends much of each new token outside
the model's matmuls (cache objects, mask building, logits processors, stopping
criteria), and it cannot know that the rows of a GRPO group share a prompt or that a
CPU's threads do better on separate rows than on one tiny matmul (see ``sample``). On
2 CPU cores, 64 completions of 32 tokens: 0.105 s here against 0.132 s for TRL's
``generate`` with a 0.86M-parameter Llama, 1.39 s against 1.72 s at 27M parameters.
This loop does the same arithmetic with the same
weights: embeddings, RMSNorm, fused QKV and gate-up projections, rotary embeddings from
the model's own rotary module, SDPA against a cache written in place, and picks the
same tokens as ``generate`` with rlx's keyed Gumbel noise or greedy (the tests check it
token for token). Rows that share a prompt (a GRPO group) are prefilled once and their
cache copied to the group.

Only architectures whose layers it reproduces exactly are taken (``supports``); any
other model, or a generation config that asks for logits processors (repetition
penalty and the like), goes through ``model.generate``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rlx.precision import cpu_features

# doubles of Gumbel noise drawn per block of steps (the draw for all steps at once
# would hold B x T x V of them: gigabytes with a 150k-token vocabulary)
_NOISE_BLOCK = 8_000_000
_MODELS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# generation-config fields that make ``generate`` add a logits processor this loop lacks
_NEUTRAL = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
            "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,),
            "forced_eos_token_id": (None,), "sequence_bias": (None,), "encoder_repetition_penalty": (None, 1.0),
            "exponential_decay_length_penalty": (None,), "min_length": (None, 0), "renormalize_logits": (None, False)}


def supports(model: Any) -> bool:
    """True if :func:`sample` reproduces ``model``'s forward pass."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in _MODELS or type(model).__name__ != _MODELS[kind]:
        return False
    if getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "mlp_bias", False):
        return False
    if getattr(cfg, "pretraining_tp", 1) != 1 or getattr(cfg, "use_sliding_window", False):
        return False
    gen = getattr(model, "generation_config", None)
    return all(getattr(gen, k, None) in ok for k, ok in _NEUTRAL.items())


def groups(ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(first row of each run of identical prompt rows, the run of every row), or None
    when too few rows repeat for sharing to pay."""
    if ids.shape[0] < 2:
        return None
    same = (ids[1:] == ids[:-1]).all(-1) & (attn[1:] == attn[:-1]).all(-1)
    if int(same.sum()) * 2 < ids.shape[0]:
        return None
    new = torch.cat([same.new_ones(1), ~same])
    return new.nonzero().squeeze(-1), new.long().cumsum(0) - 1


# off: the plain F.linear path, which the tests compare the packed one with
PACK = True


def packs(dtype: torch.dtype, device: torch.device) -> bool:
    """True if the loop's bf16 matrices are handed to oneDNN in its own blocked layout
    (``_Layers``), where this torch build has the ops and the CPU the instructions they
    need. Off: ``F.linear`` (the same values, bit for bit: the same kernel, which otherwise
    re-lays each matrix out at every call)."""
    return (PACK and dtype == torch.bfloat16 and device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and _cpu_packs_bf16())


def _cpu_packs_bf16() -> bool:
    """Whether oneDNN's packed bf16 linear runs on this CPU: it needs AVX-NE-CONVERT or
    AVX512 BW, VL and DQ, and raises on others (an AVX2-only CPU, where ``F.linear``
    emulates bf16 instead)."""
    caps = cpu_features()
    return bool(caps.get("avx_ne_convert") or all(caps.get(f) for f in ("avx512_bw", "avx512_vl", "avx512_dq")))


def _packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _Layers:
    """The weights of each decoder layer in the layout the loop uses, the matrices in
    ``dtype``: the model's own, or bf16 under autocast, cast once per call of ``sample``
    rather than at every token as autocast would. In bf16 on a CPU they are also laid out
    once for oneDNN (``packs``): 32 products of a 27M-parameter model's decode step, 64 rows,
    took 7.7-8.3 ms against 12.4-13.5 ms with ``F.linear`` (measured here, AMX)."""

    def __init__(self, model: Any, dtype: torch.dtype, rows: int | None = None):
        cfg = model.config
        self.dtype = dtype
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.layers = []
        for lyr in model.model.layers:
            a, mlp = lyr.self_attn, lyr.mlp
            projs = (a.q_proj, a.k_proj, a.v_proj)
            qkv_b = _to(torch.cat([p.bias for p in projs]), dtype) if all(p.bias is not None for p in projs) else None
            self.layers.append((lyr.input_layernorm.weight, torch.cat([p.weight for p in projs]).to(dtype), qkv_b,
                                a.o_proj.weight.to(dtype), _to(a.o_proj.bias, dtype), lyr.post_attention_layernorm.weight,
                                torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).to(dtype),
                                mlp.down_proj.weight.to(dtype)))
        self.head = model.lm_head.weight.to(dtype)
        self.head_bias = _to(model.lm_head.bias, dtype)
        self.linear = F.linear
        if packs(dtype, self.head.device):
            def pack(t: Any) -> Any:
                return torch.ops.mkldnn._reorder_linear_weight(t, rows) if torch.is_tensor(t) and t.dim() == 2 else t

            self.layers = [(n1, pack(qkv), qkv_b, pack(o), o_b, n2, pack(gu), pack(d))
                           for n1, qkv, qkv_b, o, o_b, n2, gu, d in self.layers]
            self.head = pack(self.head)
            self.linear = _packed_linear


def _to(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def compute_dtype(model: Any) -> torch.dtype:
    """The dtype the model's matrix products run in here: the autocast dtype inside an
    enabled autocast region (``run.precision=bf16``), else the weights' own."""
    p = next(model.parameters())
    if torch.is_autocast_enabled(p.device.type):
        return torch.get_autocast_dtype(p.device.type)
    return p.dtype


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """transformers' ``x * cos + rotate_half(x) * sin`` in three ops instead of six:
    rotate_half(x) is x's halves swapped with the first negated, and the sign is moved onto
    ``signed_sin`` (sin with its first half negated), which is exact: (-a) * b == a * (-b)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with the first half of its last dimension negated (see ``_rope``)."""
    h = sin.shape[-1] // 2
    return torch.cat((-sin[..., :h], sin[..., h:]), -1)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of ``q`` to the cache with torch's SDPA, the kernel transformers runs (in
    fp32 the same tokens as ``generate``, bit for bit)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def keyed_generators(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """Row i's noise generator, seeded with ``seeds[i]``, on the device that samples.

    On a GPU the noise is drawn there: drawn on the CPU and copied over, the noise of 64
    rows over Qwen's 152k-token vocabulary took ~160 ms per token on an H200, five times
    ``generate``'s whole step (measured 2026-12-04). A completion then depends on its seed
    and the device's kind, as its logits already do."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def noise_block(device: torch.device, rows: int, vocab: int) -> int:
    """Steps of noise to draw at once. On a CPU one draw of several steps continues each
    generator's stream exactly as single steps would; a CUDA generator's draw depends on
    its shape, so there the noise is drawn a step at a time, as ``KeyedGumbel`` draws it."""
    if device.type != "cpu":
        return 1
    return max(1, _NOISE_BLOCK // max(1, rows * vocab))


def gumbel(gens: list[torch.Generator], steps: int, vocab: int) -> torch.Tensor:
    """``[B, steps, V]`` Gumbel noise on the generators' device; row i continues generator
    i's stream."""
    u = torch.stack([torch.rand(steps, vocab, generator=g, dtype=torch.float64, device=g.device) for g in gens])
    return -torch.log(-torch.log(u.clamp(min=1e-300)))


_pool: Any = None


def _chunks(ids: torch.Tensor, attn: torch.Tensor, n: int) -> list[slice]:
    """``n`` runs of about equal rows, cut only between prompt groups."""
    shared = groups(ids, attn)
    starts = shared[0].tolist() if shared is not None else list(range(ids.shape[0]))
    B = ids.shape[0]
    cuts = [0]
    for k in range(1, n):
        target = B * k / n
        best = min(starts, key=lambda s: abs(s - target))
        if best > cuts[-1]:
            cuts.append(best)
    cuts.append(B)
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


@torch.no_grad()
def sample(model: Any, ids: torch.Tensor, attn: torch.Tensor, *, max_new_tokens: int, eos: int, pad: int,
           min_new_tokens: int = 0, temperature: float = 1.0, seeds: list[int] | None = None) -> torch.Tensor:
    """``[B, T]`` new tokens for left-padded prompts ``ids``: greedy without ``seeds``,
    else argmax(logits / temperature + Gumbel noise of row i's seed). As ``generate``:
    EOS is barred before ``min_new_tokens``, a finished row continues with ``pad``, and
    the loop ends when every row has finished.

    On a CPU with N torch threads, in fp32, the rows are cut into N parts (between prompt
    groups), each decoded by its own thread with one torch thread: a decode step's matmuls
    have one row per sequence, too few for two threads to share one well (measured here: 64
    rows, 2 cores, 18% faster at 27M parameters, 25% at 0.9M). Rows are independent, so
    the tokens are the same."""
    kw = dict(max_new_tokens=max_new_tokens, eos=eos, pad=pad, min_new_tokens=min_new_tokens,
              temperature=temperature)
    threads = torch.get_num_threads()
    # autocast state is per thread: read here, carried to the parts as the weights' dtype
    w = _Layers(model, compute_dtype(model), ids.shape[0])
    # bf16 products of a few rows run at the speed the weights stream from memory (AMX),
    # and each part reads all of them: one part, all threads (64 x 32 tokens at 27M
    # parameters: 1.41 s against 1.64 s split; in fp32 split 1.92 against 2.06 s)
    split = ids.device.type == "cpu" and threads > 1 and ids.shape[0] > 1 and w.dtype == torch.float32
    parts = _chunks(ids, attn, threads) if split else []
    if len(parts) < 2:
        return _sample(model, w, ids, attn, seeds=seeds, **kw)
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rlx-decode")
    try:
        jobs = [_pool.submit(_one_thread, model, w, ids[p], attn[p], seeds=None if seeds is None else seeds[p], **kw)
                for p in parts]
        outs = [j.result() for j in jobs]
    finally:
        torch.set_num_threads(threads)
    T = max(o.shape[1] for o in outs)  # a part that finished early is padded, as generate pads its rows
    return torch.cat([F.pad(o, (0, T - o.shape[1]), value=pad) for o in outs])


def _one_thread(*args: Any, **kwargs: Any) -> torch.Tensor:
    # the thread count is per OS thread for OpenMP: set it in the worker (the caller's is
    # restored after the parts are done, as setting it may reach the process default)
    torch.set_num_threads(1)
    return _sample(*args, **kwargs)


@torch.no_grad()
def _sample(model: Any, w: _Layers, ids: torch.Tensor, attn: torch.Tensor, *, max_new_tokens: int, eos: int,
            pad: int, min_new_tokens: int = 0, temperature: float = 1.0,
            seeds: list[int] | None = None) -> torch.Tensor:
    # the loop casts for itself (matrices in w.dtype, the residual stream and norms in the
    # weights' dtype, as autocast keeps them); autocast on top would cast again
    with torch.autocast(ids.device.type, enabled=False):
        return _decode(model, w, ids, attn, max_new_tokens=max_new_tokens, eos=eos, pad=pad,
                       min_new_tokens=min_new_tokens, temperature=temperature, seeds=seeds)


def _decode(model: Any, w: _Layers, ids: torch.Tensor, attn: torch.Tensor, *, max_new_tokens: int, eos: int,
            pad: int, min_new_tokens: int, temperature: float, seeds: list[int] | None) -> torch.Tensor:
    m = model.model
    B, P = ids.shape
    T = max_new_tokens
    L = P + T
    H, KVH, D = w.heads, w.kv_heads, w.head_dim
    p = next(model.parameters())
    dev, dtype = p.device, w.dtype
    pos = torch.cat([(attn.cumsum(-1) - 1).clamp(min=0), attn.sum(-1, keepdim=True) + torch.arange(T, device=dev)], 1)
    cos_all, sin_all = m.rotary_emb(p, pos)
    cos_all, ssin_all = cos_all[:, None].to(dtype), signed_sin(sin_all[:, None].to(dtype))  # [B, 1, L, D]
    key_ok = torch.cat([attn.bool(), torch.ones(B, T, dtype=torch.bool, device=dev)], 1)
    # on a CPU the cache is fp32 whatever the products' dtype: its keys and values are the
    # bf16 projections' own values, exactly, and attention over them runs in fp32, where a
    # one-query attention call over 32 rows x 8 heads x 40 keys took 0.63 ms against 2.1 ms
    # in bf16 (batched bf16 products of one row are slow on this CPU; measured 2026-12-03)
    cache_dtype = torch.float32 if dev.type == "cpu" else dtype
    kc = torch.empty(len(w.layers), B, KVH, L, D, device=dev, dtype=cache_dtype)
    vc = torch.empty_like(kc)
    kcl, vcl = kc.unbind(0), vc.unbind(0)  # each layer's cache, indexed once rather than per token
    scale = D ** -0.5
    # At 0.86M parameters a decode step is mostly the Python between its ~40 ops per layer,
    # and the parts of a split decode hold the GIL for it in turn (two parts took 144 ms as
    # threads, 93-95 ms each as processes; measured 2026-12-04). So the step skips casts to
    # the dtype a tensor already has and writes the cache through plain views.

    def to_compute(t: torch.Tensor) -> torch.Tensor:
        return t if t.dtype == dtype else t.to(dtype)

    def to_cache(t: torch.Tensor) -> torch.Tensor:
        return t if t.dtype == cache_dtype else t.to(cache_dtype)

    def forward(x: torch.Tensor, s: int, e: int, rows: Any, mask: torch.Tensor) -> torch.Tensor:
        """Positions s..e-1 of ``rows``; writes their keys and values; the last position's logits."""
        b, n = x.shape[0], e - s
        cos, ssin = cos_all[rows, :, s:e], ssin_all[rows, :, s:e]
        every_row = isinstance(rows, slice)  # all rows (every decode step): plain views, no index copies
        for li, (w1, wqkv, bqkv, wo, bo, w2, wgu, wd) in enumerate(w.layers):
            h = to_compute(F.rms_norm(x, (x.shape[-1],), w1, w.eps))
            qkv = w.linear(h, wqkv, bqkv).view(b, n, H + 2 * KVH, D).transpose(1, 2)
            qk = _rope(qkv[:, :H + KVH], cos, ssin)  # queries and keys in one pass
            kl, vl = kcl[li], vcl[li]
            if every_row:
                kl.narrow(2, s, n).copy_(qk[:, H:])
                vl.narrow(2, s, n).copy_(qkv[:, H + KVH:])
                keys, values = kl.narrow(2, 0, e), vl.narrow(2, 0, e)
            else:
                kl[rows, :, s:e] = to_cache(qk[:, H:])
                vl[rows, :, s:e] = to_cache(qkv[:, H + KVH:])
                keys, values = kl[rows, :, :e], vl[rows, :, :e]
            o = _attend(to_cache(qk[:, :H]), keys, values, mask, scale)
            x = x + w.linear(to_compute(o.transpose(1, 2).reshape(b, n, H * D)), wo, bo)
            gate, up = w.linear(to_compute(F.rms_norm(x, (x.shape[-1],), w2, w.eps)), wgu).chunk(2, -1)
            x = x + w.linear(F.silu(gate) * up, wd)
        return w.linear(to_compute(m.norm(x[:, -1:])), w.head, w.head_bias)[:, 0].float()

    def prefill_mask(ok: torch.Tensor) -> torch.Tensor:
        causal = torch.ones(P, P, dtype=torch.bool, device=dev).tril()
        # a padding query sees itself, so no row of the softmax is empty (its output is never read)
        return (causal & ok[:, None, None, :P]) | torch.eye(P, dtype=torch.bool, device=dev)

    shared = groups(ids, attn)
    if shared is not None:
        first, of = shared
        logits = forward(m.embed_tokens(ids[first]), 0, P, first, prefill_mask(key_ok[first]))
        kc[:, :, :, :P] = kc[:, first, :, :P][:, of]
        vc[:, :, :, :P] = vc[:, first, :, :P][:, of]
        logits = logits[of]
    else:
        logits = forward(m.embed_tokens(ids), 0, P, slice(None), prefill_mask(key_ok))

    gens = keyed_generators(seeds, dev) if seeds is not None else None
    block = noise_block(dev, B, logits.shape[-1])
    noise = None
    out = torch.full((B, T), pad, dtype=torch.long, device=dev)
    running = torch.ones(B, dtype=torch.bool, device=dev)
    done = T
    for t in range(T):
        scores = logits
        if t < min_new_tokens:
            scores = scores.clone()
            scores[:, eos] = -float("inf")
        if gens is not None:
            if t % block == 0:
                noise = gumbel(gens, min(block, T - t), scores.shape[-1]).float()
            scores = scores / temperature + noise[:, t % block]
        tok = torch.where(running, scores.argmax(-1), pad)
        out[:, t] = tok
        running &= tok != eos
        if t + 1 == T or not bool(running.any()):
            done = t + 1
            break
        e = P + t + 1
        logits = forward(m.embed_tokens(tok[:, None]), e - 1, e, slice(None), key_ok[:, None, None, :e])
    return out[:, :done]
