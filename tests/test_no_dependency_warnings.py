"""rlx calls transformers only through names it still supports: no deprecation warning
from sampling, scoring or decoding, and none in a whole run's output. transformers 5.24
renamed ``past_key_values`` (argument and output field) to ``cache``; the old name warns
until it goes in 5.40, and then decoding with a shared prompt would break."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from transformers.utils import logging as hf_logging

from rlx.batch import Batch
from rlx.plugins.hf import decode
from rlx.plugins.hf.config import HFConfig
from rlx.plugins.hf.policy import HFPolicy
from rlx.plugins.tiny.config import TinyConfig
from rlx.plugins.tiny.policy import CHECKPOINT, TinyPolicy

PROMPTS = ["Q:3+20+2\n", "Q:7-4\n", "Q:12*3-5\n"]
GROUPED = [p for p in PROMPTS for _ in range(3)]  # a GRPO group per prompt: the shared-prompt paths


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def _transformers_warnings() -> Iterator[list[str]]:
    """What transformers warns about inside the block, through either channel it uses:
    ``warnings.warn(FutureWarning)`` (``deprecate_kwarg``, a renamed argument) and its
    logger's ``warning_once`` (a renamed output field). ``warning_once`` remembers what
    it said for the whole process, so that memory is cleared first: an earlier test
    triggering the same warning must not hide it here."""
    found: list[str] = []
    handler = _Records()
    root = hf_logging.get_logger()  # the library's root logger; every module's logger propagates to it
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.warning_once.cache_clear()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        root.removeHandler(handler)
        hf_logging.set_verbosity(level)
    found += [f"{w.category.__name__}: {w.message}" for w in caught
              if issubclass(w.category, (FutureWarning, DeprecationWarning, PendingDeprecationWarning))]
    found += handler.messages


@pytest.fixture(scope="module")
def tiny() -> TinyPolicy:
    return TinyPolicy(TinyConfig())


@pytest.fixture(scope="module")
def sampled(tiny: TinyPolicy) -> Batch:
    batch = tiny.generate(GROUPED, max_new_tokens=16, seeds=list(range(len(GROUPED))))
    P = batch["input_ids"].shape[1] - batch["actions"].shape[1]
    # else the scoring calls below would not take the shared-prompt path that used the old name
    assert decode.groups(batch["input_ids"][:, :P], batch["attention_mask"][:, :P]) is not None
    return batch


def _score(policy: TinyPolicy, batch: Batch) -> None:
    policy.model.train()  # as in training: with gradients
    logp, _ = policy.log_probs(batch, entropy=True)
    logp.sum().backward()
    policy.model.zero_grad(set_to_none=True)


def _evaluate_actions(policy: TinyPolicy, batch: Batch) -> None:
    policy.add_value_head()
    policy.model.train()
    logp, _, value = policy.evaluate_actions(batch)
    (logp.sum() + value.sum()).backward()
    policy.model.zero_grad(set_to_none=True)


CALLS: dict[str, Callable[[TinyPolicy, Batch], object]] = {
    "decode loop, seeded": lambda p, b: p.generate(GROUPED, max_new_tokens=12, seeds=list(range(len(GROUPED)))),
    "decode loop, greedy": lambda p, b: p.generate(PROMPTS, max_new_tokens=12, greedy=True),
    "decode.sample": lambda p, b: decode.sample(p.model.eval(), b["input_ids"][:, :-b["actions"].shape[1]],
                                                b["attention_mask"][:, :-b["actions"].shape[1]], max_new_tokens=8,
                                                eos=p.tokenizer.eos_token_id, pad=p.tokenizer.pad_token_id,
                                                seeds=list(range(len(GROUPED)))),
    "model.generate, seeded": lambda p, b: TinyPolicy(TinyConfig(sampler="transformers")).generate(
        GROUPED, max_new_tokens=12, seeds=list(range(len(GROUPED)))),
    "model.generate, unseeded": lambda p, b: TinyPolicy(TinyConfig(sampler="transformers")).generate(
        PROMPTS, max_new_tokens=12),
    "log_probs, shared prompts": _score,
    "log_probs, one pass per row": lambda p, b: _score(TinyPolicy(TinyConfig(share_prompts=False)), b),
    "log_probs, encoded pairs": lambda p, b: _score(p, p.encode(PROMPTS, ["A:25", "A:3", "A:31"])),
    "evaluate_actions, shared prompts": _evaluate_actions,
    "hf policy log_probs": lambda p, b: _score(HFPolicy(HFConfig(model=str(CHECKPOINT))), b),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_policy_calls_emit_no_transformers_deprecation(tiny, sampled, call):
    with _transformers_warnings() as found:
        CALLS[call](tiny, sampled)
    assert not found, found


@pytest.mark.slow
def test_a_run_prints_nothing_from_transformers(tmp_path):
    from _cli import rlx

    # warnings at transformers' default verbosity, advisory ones included, whatever the caller's environment
    # says; no MLflow, which costs half the run's time and has nothing to do with transformers
    proc = rlx("run", "--steps", "2", "--set", "run.batch_size=1", "--set", "objective.num_generations=2",
               "--set", "env.eval_size=4", "--set", "generation.max_new_tokens=16", "--set", "run.threads=1",
               "--no-progress", "--no-tracking", home=tmp_path, TRANSFORMERS_VERBOSITY="warning",
               TRANSFORMERS_NO_ADVISORY_WARNINGS="")
    assert proc.returncode == 0, proc.stderr
    assert "FINISHED" in proc.stdout
    # transformers' logger prefixes "[transformers]"; a Python warning reads "file:line: SomeWarning: ..."
    noise = [line for line in proc.stderr.splitlines()
             if "transformers" in line.lower() or re.search(r"\w+Warning: ", line)]
    assert not noise, proc.stderr
