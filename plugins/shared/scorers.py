"""Learned scorers: transformers classifiers used as reward models.

Two kinds, each usable as an outcome or a process reward:

- classifier: a one-label sequence-classification model (outcome: its logit for prompt +
  completion + EOS) or token-classification model (process: its logit at each step's
  separator, the newline after the step or the EOS after the last one; a causal model
  has read the whole step there and, unlike at the step's last digit, knows the number
  has ended).
- implicit: a causal LM and its frozen reference, scoring by ``q_t = beta * sum over
  completion tokens up to t of log pi(y|x) - log pi_ref(y|x)`` (the implicit reward of
  DPO; per step, the implicit PRM of Yuan et al. 2024, "Free Process Rewards without
  Process Labels"): the outcome reward is q at the EOS, a step's score sigmoid(q) at its
  separator. The folder holds the trained LM, ``reference/`` and ``rlx_implicit_beta``
  in its config.json. It learns from the LM's own next-token knowledge, which is why it
  works where a fresh classification head does not learn to verify arithmetic in a CPU
  budget (see plugins/rm/README.md).

The trainers (``rm``, ``prm-train``) and the users (``orm``, ``prm`` backend ``model``,
``ensemble``) all encode through ``encode`` below, so a model scores text exactly the
way it was trained to.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlx.errors import UsageError

HEADS = {"sequence": "AutoModelForSequenceClassification", "token": "AutoModelForTokenClassification"}
# saved in the model's config.json by the trainers: the mean and spread of the model's
# scores on held-out data, so members of an ensemble can be put on one scale
CALIBRATION = "rlx_score_calibration"
# in an implicit reward model's config.json: its beta (and so its kind)
IMPLICIT = "rlx_implicit_beta"


def step_ends(completion: str) -> list[int]:
    """Character offset just past each step: steps are the non-empty lines (trailing
    spaces not counted), the segmentation arithmetic's step checker uses too."""
    ends, pos = [], 0
    for line in completion.split("\n"):
        if line.strip():
            ends.append(pos + len(line.rstrip()))
        pos += len(line) + 1
    return ends


def classifier_from_lm(lm: torch.nn.Module, tokenizer: Any, head: str) -> torch.nn.Module:
    """A one-label classifier holding ``lm``'s backbone weights: a reward model warm
    started from the policy, so it begins already able to read the task."""
    import transformers

    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    config.architectures = None
    cls = getattr(transformers, HEADS[head])
    try:
        model = cls.from_config(config)
    except ValueError as exc:  # an architecture without that head
        raise UsageError(f"model type '{config.model_type}' has no {HEADS[head]} in transformers ({exc}); "
                         "use a policy whose architecture has one (llama, qwen2, gpt2, ...)") from None
    p = next(lm.parameters())
    model.base_model.load_state_dict(lm.base_model.state_dict())
    return model.to(device=p.device, dtype=p.dtype)


def _model_dir(path: str | Path, head: str, what: str) -> Path:
    local = Path(str(path)).expanduser()
    if not local.is_dir() or not (local / "config.json").is_file():
        raise UsageError(f"{what}='{path}' is not a saved model directory (no config.json); pass the folder an "
                         f"'rlx run --objective {'rm' if head == 'sequence' else 'prm-train'}' run printed")
    return local


def _load(local: Path, cls_name: str, what: str) -> tuple[torch.nn.Module, Any]:
    import transformers
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(local)
        model = getattr(transformers, cls_name).from_pretrained(local)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"cannot load {what}='{local}' as a {cls_name}: {first}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval().requires_grad_(False), tok


def load_classifier(path: str | Path, head: str, what: str) -> tuple[torch.nn.Module, Any]:
    """A saved classifier and its tokenizer, frozen, or a one-line error naming ``what``
    (the setting that pointed here)."""
    model, tok = _load(_model_dir(path, head, what), HEADS[head], what)
    if model.config.num_labels != 1:
        raise UsageError(f"{what}='{path}' has {model.config.num_labels} labels; a reward model has one")
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


@dataclass
class Encoded:
    """Right-padded ``input_ids``/``attention_mask`` and, per row, the prompt's length
    and each completion token's character span (to find step separators)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_lens: list[int]
    spans: list[list[tuple[int, int]]]
    has_eos: bool

    def to(self, device: torch.device | str) -> "Encoded":
        self.input_ids, self.attention_mask = self.input_ids.to(device), self.attention_mask.to(device)
        return self

    def separators(self, row: int, ends: list[int]) -> list[int]:
        """Token index of the separator after each step ending at character ``ends[k]``."""
        spans, P = self.spans[row], self.prompt_lens[row]
        last = P + len(spans) - (0 if self.has_eos else 1)  # the EOS, or the last token
        out = []
        for end in ends:
            j = next((k for k, (start, _) in enumerate(spans) if start >= end), None)
            out.append(P + j if j is not None else max(last, 0))
        return out


def encode(tokenizer: Any, prompts: list[str], completions: list[str], max_length: int | None = None) -> Encoded:
    """prompt + completion (+ EOS when the tokenizer's pad differs from it), right-padded.

    Rows longer than ``max_length`` keep their end: the score is read there."""
    eos = tokenizer.eos_token_id
    has_eos = eos is not None and eos != tokenizer.pad_token_id
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_enc = tokenizer(completions, add_special_tokens=False, return_offsets_mapping=True)
    rows, plens, spans = [], [], []
    for p, c, offs in zip(p_ids, c_enc["input_ids"], c_enc["offset_mapping"]):
        row = list(p) + list(c) + ([eos] if has_eos else [])
        cut = max(len(row) - max_length, 0) if max_length else 0
        rows.append(row[cut:])
        plens.append(len(p) - cut)  # may go negative: separators below still index from the row's start
        spans.append([tuple(o) for o in offs])
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, : len(r)] = 1
    return Encoded(ids, attn, plens, spans, has_eos)


def sequence_scores(model: torch.nn.Module, enc: Encoded) -> torch.Tensor:
    """``[B]``: the outcome model's logit for each row (the model pools its last real token)."""
    return model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits[:, 0].float()


def token_scores(model: torch.nn.Module, enc: Encoded) -> torch.Tensor:
    """``[B, L]``: the process model's logit at every position."""
    return model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits[..., 0].float()


def completion_mask(enc: Encoded) -> torch.Tensor:
    """``[B, L]``: 1.0 on each row's completion tokens and its EOS, 0 on prompt and padding."""
    mask = torch.zeros(enc.input_ids.shape, device=enc.input_ids.device)
    for r, (P, spans) in enumerate(zip(enc.prompt_lens, enc.spans)):
        end = max(P, 0) + len(spans) + (1 if enc.has_eos else 0)
        mask[r, max(P, 0):end] = 1.0
    return mask * enc.attention_mask


def token_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: ``log p(x_t | x_<t)`` at each position t (0 at t = 0)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return torch.nn.functional.pad(lp, (1, 0))


def implicit_q(logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """``[B, L]``: ``beta`` times the running sum of the completion's log-ratios up to each position."""
    return beta * ((logps - ref_logps) * mask).cumsum(-1)


def default_device() -> str:
    # accelerate has already pointed each process at its own GPU: "cuda" is that one
    return "cuda" if torch.cuda.is_available() else "cpu"


def max_positions(model: torch.nn.Module) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


class Scorer:
    """A frozen reward model loaded from a directory (either kind), scoring text in chunks."""

    def __init__(self, path: str | Path, head: str, what: str, batch_size: int = 64, device: str | None = None):
        local = _model_dir(path, head, what)
        import json

        self.beta = json.loads((local / "config.json").read_text()).get(IMPLICIT)
        self.reference: torch.nn.Module | None = None
        if self.beta is not None:
            if not (local / "reference" / "config.json").is_file():
                raise UsageError(f"{what}='{path}' is an implicit reward model without its reference/ folder; "
                                 "copy the whole folder the run saved")
            self.model, self.tokenizer = _load(local, "AutoModelForCausalLM", what)
            self.reference, _ = _load(local / "reference", "AutoModelForCausalLM", what)
        else:
            self.model, self.tokenizer = load_classifier(local, head, what)
        self.head, self.batch_size = head, batch_size
        self.calibration = getattr(self.model.config, CALIBRATION, None)
        self.model.to(device or default_device())
        if self.reference is not None:
            self.reference.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encoded(self, prompts: list[str], completions: list[str]) -> Any:
        for start in range(0, len(prompts), self.batch_size):
            enc = encode(self.tokenizer, prompts[start:start + self.batch_size],
                         completions[start:start + self.batch_size], max_positions(self.model))
            yield start, enc.to(self.device)

    def _q(self, enc: Encoded) -> torch.Tensor:
        assert self.reference is not None and self.beta is not None
        ids, attn = enc.input_ids, enc.attention_mask
        return implicit_q(token_logps(self.model, ids, attn), token_logps(self.reference, ids, attn),
                          completion_mask(enc), float(self.beta))

    @torch.no_grad()
    def outcome(self, prompts: list[str], completions: list[str], normalize: bool = False) -> torch.Tensor:
        """``[B]`` rewards; ``normalize`` puts them on the held-out scale the trainer saved."""
        parts = []
        for _, enc in self._encoded(prompts, completions):
            parts.append((self._q(enc)[:, -1] if self.reference is not None else sequence_scores(self.model, enc)).cpu())
        out = torch.cat(parts)
        if normalize and self.calibration:
            mean, std = self.calibration
            out = (out - mean) / max(std, 1e-6)
        return out

    @torch.no_grad()
    def steps(self, prompts: list[str], completions: list[str], ends: list[list[int]]) -> list[list[float]]:
        """The probability that each step is correct, for steps ending at ``ends[i]``."""
        out: list[list[float]] = []
        for start, enc in self._encoded(prompts, completions):
            z = self._q(enc) if self.reference is not None else token_scores(self.model, enc)
            probs = torch.sigmoid(z).cpu()
            for r in range(enc.input_ids.shape[0]):
                pos = enc.separators(r, ends[start + r])
                out.append(probs[r, pos].tolist() if pos else [])
        return out


def calibration(scores: torch.Tensor) -> list[float]:
    """[mean, std] of a model's scores, for ``CALIBRATION``."""
    s = scores.float()
    std = float(s.std()) if s.numel() > 1 else 1.0
    return [float(s.mean()), std if math.isfinite(std) and std > 0 else 1.0]
