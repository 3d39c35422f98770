"""A transformers causal LM as an rlx policy."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rlx.batch import Batch
from rlx.errors import UsageError
from rlx.plugins.hf import attention, decode, norms, packing
from rlx.policy import LMPolicy, ModelTarget, unwrap


def _quiet_transformers() -> None:
    # rlx draws its own progress bar; transformers' per-load and per-save bars are noise
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


_quiet_transformers()


def _cache_kwarg(model: torch.nn.Module) -> str:
    """The keyword ``model``'s forward takes a KV cache by. transformers 5.24 renamed
    ``past_key_values`` to ``cache``: the old name still works there but warns, and goes
    in 5.40; older releases, and remote code written for them, know only the old one."""
    try:
        params = inspect.signature(unwrap(model).forward).parameters
    except (TypeError, ValueError):  # a forward without a readable signature
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: Any) -> Any:
    """The KV cache a forward returned. Since transformers 5.24 the output field is
    ``cache`` and reading ``past_key_values`` logs a deprecation warning, so the field
    is looked up by name rather than read through the old alias."""
    if dataclasses.is_dataclass(out) and any(f.name == "cache" for f in dataclasses.fields(out)):
        return out.cache
    return getattr(out, "past_key_values", None)


class KeyedGumbel:
    """Sampling as argmax(logits / T + Gumbel noise), the noise of row i drawn from its own
    generator seeded with ``seeds[i]``: a completion depends only on its seed, not on
    which other rows share the batch or the process. That is what makes a 2-process run
    equal a 1-process run, and a resumed run equal an uninterrupted one."""

    def __init__(self, seeds: list[int], temperature: float):
        self.seeds = seeds
        self.gens: list[torch.Generator] | None = None  # made on the scores' device at the first step
        self.temperature = temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.gens is None:
            self.gens = decode.keyed_generators(self.seeds, scores.device)
        gumbel = decode.gumbel(self.gens, 1, scores.shape[-1])[:, 0]
        return scores.float() / self.temperature + gumbel.float()


class HFPolicy(LMPolicy):

    def __init__(self, config: Any, *, model: torch.nn.Module | None = None, tokenizer: Any = None, **kwargs: Any):
        super().__init__(config)
        if model is None or tokenizer is None:
            model, tokenizer = self._load(config)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(config, "attention", "rlx") == "rlx":
            attention.use(model)
        if getattr(config, "fused_norms", True):
            norms.use(model)
        self.model = model
        self.tokenizer = tokenizer
        self._pieces: dict[int, str] = {}
        self._packs: bool | None = None  # whether the model keeps packed sequences apart (checked once)

    @staticmethod
    def _load(config: Any) -> tuple[torch.nn.Module, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not config.model:
            raise UsageError("policy 'hf' needs a model: --set policy.model=<hub id or local directory>")
        local = Path(config.model).expanduser()
        source = str(local) if local.exists() else config.model
        dtype = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
        try:
            tok = AutoTokenizer.from_pretrained(source, revision=config.revision,
                                                trust_remote_code=config.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(source, revision=config.revision, dtype=dtype,
                                                         trust_remote_code=config.trust_remote_code)
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"cannot load policy.model '{config.model}': {first}; pass a local directory "
                             "written by save_pretrained or a reachable hub id") from None
        return model, tok

    # -- helpers -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _token_ends(self, ids: list[int], text: str) -> list[int]:
        """Character offset just past each token, so rewards can be placed on tokens."""
        pieces = []
        for t in ids:
            if t not in self._pieces:
                self._pieces[t] = self.tokenizer.decode([t], skip_special_tokens=True)
            pieces.append(self._pieces[t])
        if "".join(pieces) != text:
            # tokenizers whose single-token decode drops spaces: fall back to prefix decoding
            return [len(self.tokenizer.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
        ends, pos = [], 0
        for p in pieces:
            pos += len(p)
            ends.append(pos)
        return ends

    def _finish(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion: torch.Tensor,
                prompts: list[str]) -> Batch:
        eos = self.tokenizer.eos_token_id
        is_eos = completion == eos
        # tokens after the first EOS do not count; the EOS itself does (it is an action)
        after = (is_eos.cumsum(-1) - is_eos.long()) > 0
        mask = (~after).float()
        completion = completion.masked_fill(after, self.tokenizer.pad_token_id)
        texts, ends = [], []
        for row, m in zip(completion.tolist(), mask.tolist()):
            ids = [t for t, keep in zip(row, m) if keep and t != eos]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            texts.append(text)
            ends.append(self._token_ends(ids, text))
        batch = Batch(
            {"input_ids": torch.cat([prompt_ids, completion], 1),
             "attention_mask": torch.cat([prompt_mask, mask.long()], 1),
             "actions": completion, "mask": mask},
            {"prompt": list(prompts), "completion": texts, "token_ends": ends},
        )
        return batch

    # -- interface -----------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int, temperature: float = 1.0,
                 greedy: bool = False, min_new_tokens: int = 0, seeds: list[int] | None = None) -> Batch:
        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        tok = self.tokenizer
        if getattr(self.config, "sampler", "auto") == "auto" and (greedy or seeds is not None) and decode.supports(model):
            completion = decode.sample(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                                       eos=tok.eos_token_id, pad=tok.pad_token_id, min_new_tokens=min_new_tokens,
                                       temperature=temperature, seeds=None if greedy else seeds)
        else:
            completion = self._hf_generate(model, enc, max_new_tokens=max_new_tokens, temperature=temperature,
                                           greedy=greedy, min_new_tokens=min_new_tokens, seeds=seeds)
        model.train(was_training)
        return self._finish(enc["input_ids"], enc["attention_mask"], completion, prompts)

    def _hf_generate(self, model: torch.nn.Module, enc: Any, *, max_new_tokens: int, temperature: float,
                     greedy: bool, min_new_tokens: int, seeds: list[int] | None) -> torch.Tensor:
        """``model.generate``: for architectures ``decode`` does not know, and unseeded sampling."""
        kwargs: dict[str, Any] = {"do_sample": False}
        if not greedy and seeds is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([KeyedGumbel(seeds, temperature)])
        elif not greedy:
            kwargs = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        out = model.generate(**enc, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                             pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                             **kwargs)
        return out[:, enc["input_ids"].shape[1]:]

    def encode(self, prompts: list[str], completions: list[str]) -> Batch:
        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        rows = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
        T = max(len(r) for r in rows)
        comp = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
        for i, r in enumerate(rows):
            comp[i, : len(r)] = torch.tensor(r)
        # a pad id equal to EOS would be read as an early end; mark the real ends explicitly
        batch = self._finish(enc["input_ids"], enc["attention_mask"], comp, prompts)
        lengths = torch.tensor([len(r) for r in rows])
        batch["mask"] = (torch.arange(T)[None, :] < lengths[:, None]).float()
        batch["attention_mask"] = torch.cat([enc["attention_mask"], batch["mask"].long()], 1)
        return batch.to(self.device)

    def _forward(self, batch: Batch, hidden: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[B, T, V]`` that score each action, and (``hidden``) the last hidden
        state at the same positions: the state each action was taken in."""
        ids, attn = batch["input_ids"], batch["attention_mask"]
        T = batch["actions"].shape[1]
        P = ids.shape[1] - T
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        shared = decode.groups(ids[:, :P], attn[:, :P]) if P and getattr(self.config, "share_prompts", True) else None
        if shared is not None:
            out = self._forward_shared(ids, attn, pos, P, shared, hidden)
            if out is not None:
                return out
        if T and getattr(self.config, "packing", True):
            out = self._forward_packed(ids, attn, T, hidden)
            if out is not None:
                return out
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn, "position_ids": pos}
        if hidden:
            kwargs["output_hidden_states"] = True
        try:
            out = self.model(**kwargs, logits_to_keep=T + 1)
        except TypeError:  # models without logits_to_keep
            out = self.model(**kwargs)
        h = out.hidden_states[-1][:, -(T + 1):-1] if hidden else None
        return out.logits[:, -(T + 1):-1].float(), h

    def _forward_shared(self, ids: torch.Tensor, attn: torch.Tensor, pos: torch.Tensor, P: int,
                        shared: tuple[torch.Tensor, torch.Tensor], hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``_forward`` for rows that repeat a prompt (a GRPO group): each prompt runs once,
        its keys and values (with their graph: gradients reach the prompt's activations
        through every completion of the group) are copied to the group's rows, and only
        the completions run per row. The same function of the weights with fewer FLOPs:
        a 64-row batch of 8 prompts skips 7/8 of the prompt tokens. The last action is
        never an input (nothing it predicts is scored)."""
        first, of = shared
        kw: dict[str, Any] = {"output_hidden_states": True} if hidden else {}
        # the prompt pass goes around a DDP wrapper: the completion pass below is the one
        # forward DDP sees, and the backward reaches every weight through both
        try:
            head = unwrap(self.model)(input_ids=ids[first, :P], attention_mask=attn[first, :P],
                                      position_ids=pos[first, :P], use_cache=True, logits_to_keep=1, **kw)
        except TypeError:  # a model without logits_to_keep or a KV cache: one pass over every row
            return None
        cache = _output_cache(head)
        if not hasattr(cache, "batch_select_indices"):
            return None
        cache.batch_select_indices(of)
        logits = head.logits[of, -1:]
        h = head.hidden_states[-1][of, -1:] if hidden else None
        if ids.shape[1] - P > 1:
            tail = self.model(input_ids=ids[:, P:-1], attention_mask=attn[:, :-1], position_ids=pos[:, P:-1],
                              use_cache=True, **{_cache_kwarg(self.model): cache}, **kw)
            logits = torch.cat([logits, tail.logits], 1)
            if hidden:
                h = torch.cat([h, tail.hidden_states[-1]], 1)
        return logits.float(), h

    def _forward_packed(self, ids: torch.Tensor, attn: torch.Tensor, T: int,
                        hidden: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """``_forward`` for a batch with much padding (``packing``): its real tokens packed
        into a few rows, each shared prompt once (``share_prompts``), only the columns that
        predict an action through the LM head. None when packing would not save enough or
        the model does not keep packed rows apart."""
        packed = packing.lay_out_once(ids, attn, T, share_prompts=getattr(self.config, "share_prompts", True))
        if packed is None:
            return None
        if self._packs is None:
            self._packs = packing.keeps_rows_apart(unwrap(self.model))
        if not self._packs:
            return None
        keep = packing.kept_columns(packed)
        kw: dict[str, Any] = {"input_ids": packed.ids, "attention_mask": packed.mask, "position_ids": packed.positions,
                              "use_cache": False}
        if hidden:
            kw["output_hidden_states"] = True
        try:
            out = self.model(**kw, logits_to_keep=keep)
        except TypeError:  # models without logits_to_keep
            out, keep = self.model(**kw), None
        logits = packing.gather(out.logits.flatten(0, 1), packed, keep).float()
        h = packing.gather(out.hidden_states[-1].flatten(0, 1), packed) if hidden else None
        return logits, h

    def log_probs(self, batch: Batch, *, entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = self._forward(batch)
        lse = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1) - lse
        ent = None
        if entropy:
            with torch.no_grad():
                ent = lse - (F.softmax(logits, dim=-1) * logits).sum(-1)
        return logp, ent

    def add_value_head(self) -> None:
        model = unwrap(self.model)
        if not hasattr(model, "rlx_value_head"):
            width = model.get_output_embeddings().in_features
            p = next(model.parameters())
            head = torch.nn.Linear(width, 1).to(device=p.device, dtype=p.dtype)
            torch.nn.init.zeros_(head.weight)  # V = 0 at first: no spurious advantages before it learns
            torch.nn.init.zeros_(head.bias)
            # a submodule, so the optimizer, accelerate and checkpoints all see it
            model.add_module("rlx_value_head", head)

    def evaluate_actions(self, batch: Batch, *, entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        head = getattr(unwrap(self.model), "rlx_value_head", None)
        if head is None:
            raise RuntimeError("evaluate_actions needs add_value_head() first")
        logits, h = self._forward(batch, hidden=True)
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
        with torch.set_grad_enabled(entropy and torch.is_grad_enabled()):
            ent = -(logp_all.exp() * logp_all).sum(-1)
        return logp, ent, head(h).squeeze(-1).float()

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = unwrap(self.model)
        # the value head is training machinery, not part of the model a user loads back
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("rlx_value_head.")}
        model.save_pretrained(path, state_dict=state)
        self.tokenizer.save_pretrained(path)

    def log_model(self, saved: Path, target: ModelTarget) -> str:
        """The saved model in MLflow's ``transformers`` flavour: a text-generation
        pipeline, or text- (token-) classification for a reward model (process reward
        model) saved with a classifier head."""
        from rlx.plugins.hf import mlflow_model

        return mlflow_model.log(saved, target, trust_remote_code=getattr(self.config, "trust_remote_code", False))
