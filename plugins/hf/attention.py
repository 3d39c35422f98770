"""The attention function of rlx's transformers policies: transformers' SDPA, except in
bf16 on a CPU, where the scores' product and softmax are written out.

Why: torch's CPU SDPA kernel is slow in bf16 at the sizes RL scoring passes run (64 rows of
~50 tokens): in the forward and backward of the 27M-parameter medium model, its backward
kernel alone took 0.64 of 2.3 s (8 calls), and the whole pass took 2.39 s against 1.48 s
written out (measured here, bf16 autocast, 2 threads). Written out, attention is four
small matrix products and a softmax, in fp32; it holds the score matrix for the backward,
so it is taken only while that stays small (``WRITTEN_OUT_SCORES``); longer sequences keep
SDPA, whose memory does not grow with the square of the length.

Registered with transformers under ``NAME`` (with SDPA's mask function: boolean masks, or
none for plain causal attention); :func:`use` sets it on a model.
"""

from __future__ import annotations

import types
from typing import Any

import torch

NAME = "rlx_sdpa"
# score elements (rows x heads x queries x keys) per call up to which attention is written
# out: 16M fp32 scores are 64 MB per layer held for the backward
WRITTEN_OUT_SCORES = 16 * 2**20


def written_out(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                scale: float) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v in fp32, autocast or not, returned in ``value``'s
    dtype: the inputs are the bf16 projections' values, and scores rounded to bf16 before
    the softmax (as transformers' eager attention rounds them) moved the log-probs a third
    further from fp32 than SDPA does; fp32 products this small are no slower here.
    ``mask``: boolean, True where a query may attend, broadcast over
    ``[B, H, Tq, Tk]``; None: causal, the queries being the last ``Tq`` of the ``Tk``
    positions. A query that may attend nowhere (left padding) gets a uniform average
    rather than NaN, which the next layer would spread through every row's product."""
    from transformers.integrations.sdpa_attention import repeat_kv

    # grouped-query: query head h reads key/value head h // (H / KVH), as in transformers
    key, value = (repeat_kv(t, query.shape[1] // key.shape[1]) for t in (key, value))
    out_dtype = value.dtype
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale
        q_len, k_len = scores.shape[-2:]
        if mask is None:
            mask = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
        scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
        return torch.matmul(scores.softmax(-1), value.float()).to(out_dtype)


def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query`` ``[B, H, Tq, D]``, ``key`` and
    ``value`` ``[B, KVH, Tk, D]``; returns ``[B, Tq, H, D]``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, q_len, d = query.shape
    # under autocast the products run in its dtype whatever the inputs' (rotary embeddings
    # hand over fp32 queries and keys)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
    plain = (query.device.type != "cpu" or dtype == torch.float32 or dropout or kwargs.get("softcap")
             or kwargs.get("position_bias") is not None or is_causal is False or getattr(module, "is_causal", True) is False
             or b * h * q_len * key.shape[2] > WRITTEN_OUT_SCORES
             or (attention_mask is not None and attention_mask.dtype != torch.bool))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = written_out(query, key, value, attention_mask, d ** -0.5 if scaling is None else scaling)
    return out.transpose(1, 2).contiguous(), None


def _rotary_forward(self: torch.nn.Module, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary embedding's forward, cos and sin handed over in the autocast dtype under
    CPU autocast. transformers gives them in the residual stream's fp32, so the queries
    and keys leave the rotation in fp32 (twice the bytes through memory) only to be cast
    to bf16 for the product; rlx's decode loop rotates in bf16 the same way. The forward
    and backward of the medium model: 0.06-0.14 s less of ~1.3 s; log-probs as far from
    fp32 as before (mean 0.0031 against 0.0032)."""
    cos, sin = type(self).forward(self, x, position_ids)
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        return cos.to(dtype), sin.to(dtype)
    return cos, sin


def use(model: Any) -> bool:
    """Set :func:`attention` on ``model`` if it is a transformers model on SDPA (the
    default), and its rotary embedding's output in the autocast dtype; True if it was set.
    A model loaded with another implementation (eager, flash attention) keeps it."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in ("sdpa", NAME) or not hasattr(model, "set_attn_implementation"):
        return False
    # a model whose attention is not read from transformers' AttentionInterface (older remote
    # code) cannot take it; asking would print transformers' warning into the run's output
    can = getattr(model, "_can_set_attn_implementation", None)
    if can is None or not can():
        return False
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if isinstance(rotary, torch.nn.Module):
        # bound to the module, so a deep copy of the model (a reference model) rebinds it
        rotary.forward = types.MethodType(_rotary_forward, rotary)
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return config._attn_implementation == NAME
