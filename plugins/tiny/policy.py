"""The tiny policy: a transformers Llama plus a char-level ``tokenizers`` tokenizer,
both saved with ``save_pretrained`` so plain transformers loads them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlx.plugins.hf.policy import HFPolicy

CHECKPOINT = Path(__file__).parent / "checkpoint"
# Every character the arithmetic environment writes; anything else maps to <unk>.
ALPHABET = "0123456789+-*=:QA\n "
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def build_tokenizer() -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(ALPHABET))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def build_model(config: Any, vocab_size: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=config.hidden_size,
                      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                      num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
                      max_position_embeddings=config.max_length, tie_word_embeddings=True,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg)


class TinyPolicy(HFPolicy):
    def __init__(self, config: Any, **kwargs: Any):
        if config.init == "scratch" and not config.path:
            tok = build_tokenizer()
            super().__init__(config, model=build_model(config, len(tok)), tokenizer=tok)
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(config.path).expanduser() if config.path else CHECKPOINT
        if not (path / "config.json").is_file():
            from rlx.errors import UsageError

            raise UsageError(f"no tiny checkpoint at '{path}'; set policy.path to a save_pretrained "
                             "directory or use --set policy.init=scratch")
        super().__init__(config, model=AutoModelForCausalLM.from_pretrained(path),
                         tokenizer=AutoTokenizer.from_pretrained(path))
