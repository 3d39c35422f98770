"""Scoring a padded batch as packed rows: its real tokens laid end to end in a few rows,
with no padding between them and each prompt once.

A batch of teacher-forced rows (DPO's chosen and rejected completions, an SFT batch) is
left-padded prompts and right-padded completions: a third of its slots can be padding,
and every matrix product, norm and activation runs over them. Packed, the rows that share
a prompt become one unit, the prompt followed by each of their completions, and the units
are put one after another into rows of ``width`` slots (first fit, longest first). An
explicit attention mask lets a token see what it saw in its padded row and nothing else:
the earlier tokens of its prompt and of its own completion. Its position counts from the
start of its prompt, as in the padded row. So this is the same function of the weights,
equal to float rounding; ``keeps_rows_apart`` checks that on the model before it is
relied on (a model that ignores a 4D mask, such as flash attention's, would mix them).

Rows ``width`` wide cost attention in proportion to ``width`` per token; twice the longest
padded row filled them well and was the fastest width measured (27M-parameter Llama, 64
rows of 13-46 tokens, bf16 forward and backward, one sequence per unit: 0.97 s packed 64
or 96 wide, 1.02 s 128, 1.50 s 256, 2.20 s 512, against 1.48 s padded).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

# pack only when it saves at least this share of the padded batch's slots
MIN_SAVING = 0.2


@dataclass
class Packed:
    """Where a padded batch's tokens went. ``ids``, ``positions`` are ``[R, W]``, ``mask``
    ``[R, 1, W, W]`` (True: the query may attend to the key); ``source`` is ``[B, T]``: for
    each action, the flat index (``r * W + c``) of the packed token that predicts it, -1
    where the action is padding."""

    ids: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor
    source: torch.Tensor


def lay_out(ids: torch.Tensor, attn: torch.Tensor, T: int, *, share_prompts: bool = True,
            width: int | None = None) -> Packed | None:
    """Pack the real tokens of ``ids`` (``attn`` 1; the last ``T`` columns are the actions,
    their real tokens first) into rows of ``width`` slots (default: twice the longest row,
    at least 32); None when that saves less than ``MIN_SAVING`` of the slots. Rows with the
    same prompt share its tokens (``share_prompts``). A completion's last token is left out:
    nothing it predicts is scored."""
    B, L = ids.shape
    P = L - T
    if B < 2 or T == 0:
        return None
    dev = ids.device
    p_attn, c_attn = attn[:, :P].bool(), attn[:, P:].bool()
    plen_t, clen_t = p_attn.sum(-1), c_attn.sum(-1)
    plen, clen = plen_t.tolist(), clen_t.tolist()
    kept = [max(c - 1, 0) for c in clen]  # completion tokens fed in
    units: dict[Any, list[int]] = {}
    prompt_rows = (ids[:, :P] * p_attn).tolist()
    for b in range(B):
        key = (plen[b], tuple(prompt_rows[b])) if share_prompts else b
        units.setdefault(key, []).append(b)
    groups = list(units.values())
    sizes = [plen[g[0]] + sum(kept[b] for b in g) for g in groups]
    longest_row = max(p + k for p, k in zip(plen, kept))
    W = max(max(sizes), width or max(32, 2 * longest_row))
    fill: list[int] = []
    place = [0] * len(groups)
    for u in sorted(range(len(groups)), key=lambda u: -sizes[u]):
        r = next((i for i, f in enumerate(fill) if f + sizes[u] <= W), len(fill))
        if r == len(fill):
            fill.append(0)
        place[u] = r * W + fill[r]
        fill[r] += sizes[u]
    R = len(fill)
    if R * W > (1 - MIN_SAVING) * B * L:
        return None
    # per row: where its unit starts, which unit, whether it lays the prompt out, where its
    # completion starts and which completion of the unit it is
    unit_start, unit_of, lays_prompt, comp_start, part_of = [0] * B, [0] * B, [False] * B, [0] * B, [0] * B
    for u, g in enumerate(groups):
        at = place[u] + plen[g[0]]
        lays_prompt[g[0]] = True
        for k, b in enumerate(g, start=1):
            unit_start[b], unit_of[b], comp_start[b], part_of[b] = place[u], u, at, k
            at += kept[b]
    t = lambda x: torch.tensor(x, device=dev)  # noqa: E731
    unit_start_t, comp_start_t, unit_t, part_t = t(unit_start), t(comp_start), t(unit_of), t(part_of)
    flat_ids = torch.zeros(R * W, dtype=ids.dtype, device=dev)
    positions = torch.arange(W, device=dev).repeat(R)
    unit = -1 - torch.arange(R * W, device=dev)  # free slots: each alone, seeing only itself
    part = torch.zeros(R * W, dtype=torch.long, device=dev)  # 0: prompt; k >= 1: the unit's k-th completion
    ppos = p_attn.long().cumsum(-1) - 1
    take = p_attn & t(lays_prompt)[:, None]
    dest = (unit_start_t[:, None] + ppos)[take]
    rows = torch.arange(B, device=dev)[:, None].expand(B, P)[take]
    flat_ids[dest], positions[dest], unit[dest] = ids[:, :P][take], ppos[take], unit_t[rows]
    k = torch.arange(T, device=dev)[None, :]
    take = k < t(kept)[:, None]
    dest = (comp_start_t[:, None] + k).expand(B, T)[take]
    rows = torch.arange(B, device=dev)[:, None].expand(B, T)[take]
    flat_ids[dest], positions[dest] = ids[:, P:][take], (plen_t[:, None] + k).expand(B, T)[take]
    unit[dest], part[dest] = unit_t[rows], part_t[rows]
    # action 0 is predicted by the prompt's last token, action i by completion token i - 1
    first = torch.where(plen_t > 0, unit_start_t + plen_t - 1, -1)
    source = torch.where(k == 0, first[:, None], comp_start_t[:, None] + k - 1)
    source = torch.where(k < clen_t[:, None], source, -1)
    unit, part = unit.view(R, W), part.view(R, W)
    causal = torch.ones(W, W, dtype=torch.bool, device=dev).tril()
    same_unit = unit[:, :, None] == unit[:, None, :]
    sees = (part[:, None, :] == 0) | (part[:, :, None] == part[:, None, :])
    return Packed(flat_ids.view(R, W), positions.view(R, W), (same_unit & sees & causal).unsqueeze(1), source)


_last: tuple[Any, ...] | None = None


def lay_out_once(ids: torch.Tensor, attn: torch.Tensor, T: int, *, share_prompts: bool = True) -> Packed | None:
    """``lay_out``, remembered for the last batch: the reference and the policy score the
    same tensors one after the other (a DPO step), and laying out 64 rows takes ~2 ms."""
    global _last
    key = (T, share_prompts, ids._version, attn._version)
    if _last is not None and _last[0]() is ids and _last[1]() is attn and _last[2] == key:
        return _last[3]
    packed = lay_out(ids, attn, T, share_prompts=share_prompts)
    _last = (weakref.ref(ids), weakref.ref(attn), key, packed)
    return packed


def gather(flat_out: torch.Tensor, packed: Packed, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, T, ...]`` rows of ``flat_out`` (``[R * K, ...]``, the packed output flattened,
    ``K`` = ``W`` or ``len(keep)`` when only the columns ``keep`` were computed) at each
    action's predicting token; zeros where the action is padding."""
    src = packed.source
    if keep is not None:
        W = packed.ids.shape[1]
        column = torch.full((W,), -1, dtype=torch.long, device=src.device)
        column[keep] = torch.arange(len(keep), device=src.device)
        r, c = src.clamp(min=0) // W, src.clamp(min=0) % W
        src = torch.where(src >= 0, r * len(keep) + column[c], src)
    out = flat_out[src.clamp(min=0)]
    return out * (src >= 0).unsqueeze(-1).to(out.dtype)


def kept_columns(packed: Packed) -> torch.Tensor:
    """The packed columns whose outputs some action needs (for ``logits_to_keep``)."""
    src = packed.source[packed.source >= 0]
    return torch.unique(src % packed.ids.shape[1])


@torch.no_grad()
def keeps_rows_apart(model: Any) -> bool:
    """True if ``model`` scores a packed unit as it scores the padded rows: two completions
    of one prompt, packed with the mask ``lay_out`` builds, give the logits they give as two
    padded rows (a model that ignored the mask would let the second see the first)."""
    try:
        p = next(model.parameters())
        vocab = int(model.config.vocab_size)
    except (StopIteration, AttributeError):
        return False
    dev = p.device
    ids = torch.tensor([[0, 3, 1, 4, 1, 5, 9], [0, 3, 1, 4, 2, 6, 0], [3, 1, 4, 1, 5, 9, 2], [0, 0, 0, 6, 5, 0, 0]],
                       device=dev) % vocab
    attn = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0]],
                        device=dev)
    T = 3
    packed = lay_out(ids, attn, T, width=8)
    if packed is None:
        return False
    training = model.training
    model.eval()  # dropout would make the two passes differ for the wrong reason
    try:
        with torch.autocast(dev.type, enabled=False):
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            padded = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits.float()
            one = model(input_ids=packed.ids, attention_mask=packed.mask, position_ids=packed.positions,
                        use_cache=False).logits.float()
    except Exception:  # a model that takes no 4D mask or no position ids: pad as before
        return False
    finally:
        model.train(training)
    want = padded[:, -(T + 1):-1]
    got = gather(one.flatten(0, 1), packed)
    real = (packed.source >= 0).unsqueeze(-1)
    tol = 1e-3 if p.dtype == torch.float32 else 5e-2
    return bool(torch.allclose(got * real, want * real, atol=tol, rtol=tol))
