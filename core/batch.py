"""The batch that flows between environment, policy, rewards and objective.

A keyed container of ``[B, ...]`` tensors plus per-sample metadata lists. Components
agree on key names, not on classes. Keys used by the built-ins:

tensors
    ``input_ids``, ``attention_mask`` ``[B, L]``: prompt (left-padded) + completion.
    ``actions`` ``[B, T]``: the completion tokens (T = completion length).
    ``mask`` ``[B, T]``: 1.0 where a completion token counts (up to and including EOS).
    ``old_logp``, ``ref_logp`` ``[B, T]``: log-probs under the behaviour and reference policy.
    ``rewards`` ``[B, T]``: weighted rewards summed at the positions they were placed.
    ``reward_mask`` ``[B, T]``: True where any reward was placed.
    ``advantages`` ``[B, T]``; ``group`` ``[B]``: id of the prompt a sample answers.
meta
    ``task`` (the environment's task dicts), ``prompt``, ``completion`` (decoded text),
    ``token_ends`` (per sample, the character offset just past each completion token).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch


class Batch:
    def __init__(self, tensors: dict[str, "torch.Tensor"] | None = None,
                 meta: dict[str, list[Any]] | None = None):
        self.tensors: dict[str, torch.Tensor] = dict(tensors or {})
        self.meta: dict[str, list[Any]] = dict(meta or {})

    def __len__(self) -> int:
        for t in self.tensors.values():
            return int(t.shape[0])
        for v in self.meta.values():
            return len(v)
        return 0

    def __getitem__(self, key: str) -> "torch.Tensor":
        try:
            return self.tensors[key]
        except KeyError:
            raise KeyError(f"batch has no tensor '{key}' (has: {', '.join(sorted(self.tensors))})") from None

    def __setitem__(self, key: str, value: "torch.Tensor") -> None:
        self.tensors[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def get(self, key: str, default: Any = None) -> Any:
        return self.tensors.get(key, default)

    def select(self, index: "torch.Tensor | list[int] | slice") -> "Batch":
        """Rows ``index`` of every tensor and metadata list (a slice gives views; a bool
        tensor selects the rows where it is True)."""
        import torch

        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        if isinstance(index, slice):
            return Batch({k: v[index] for k, v in self.tensors.items()},
                         {k: v[index] for k, v in self.meta.items()})
        idx = index.long() if isinstance(index, torch.Tensor) else torch.as_tensor(list(index), dtype=torch.long)
        tensors = {k: v[idx if idx.device == v.device else idx.to(v.device)] for k, v in self.tensors.items()}
        rows = idx.tolist() if self.meta else []
        meta = {k: [v[i] for i in rows] for k, v in self.meta.items()}
        return Batch(tensors, meta)

    def split(self, num_chunks: int) -> Iterator["Batch"]:
        """At most ``num_chunks`` contiguous minibatches of ``ceil(len / num_chunks)`` rows
        (the last may be smaller; 4 rows in 3 chunks gives 2 of 2)."""
        n = len(self)
        size = -(-n // max(1, num_chunks))
        for start in range(0, n, size):
            yield self.select(slice(start, min(n, start + size)))

    def to(self, device: Any) -> "Batch":
        return Batch({k: v.to(device) for k, v in self.tensors.items()}, self.meta)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.tensors.items())
        return f"Batch(size={len(self)}, {shapes}, meta={sorted(self.meta)})"
