"""rlx's CUDA paths, for real, on the tiny policy (``pytest -m gpu``; skipped without a
CUDA device): run.precision=auto on a GPU, a GRPO run from the CLI that trains on the GPU,
the decode loop picking ``model.generate``'s tokens there and running its matrices in
bf16 under autocast, shared-prompt scoring, and a PPO step with its value head."""

from __future__ import annotations

import math

import pytest
import torch
from _cli import latest_run, rlx

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")]

PROMPTS = ["Q:3+20+2\n", "Q:7-4\n", "Q:12*3-5\n", "Q:1+1\n"]
SMALL_RUN = ["run.batch_size=2", "env.eval_size=4", "run.eval_every=0", "generation.max_new_tokens=8"]


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one device per process: an earlier in-process run on CPU would
    otherwise keep this one there too."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def tiny():
    from rlx.plugins.tiny.config import TinyConfig
    from rlx.plugins.tiny.policy import TinyPolicy

    policy = TinyPolicy(TinyConfig())
    policy.model.to("cuda")
    return policy


def random_qwen2(vocab: int) -> torch.nn.Module:
    """A small Qwen2 (biased q/k/v, grouped-query attention) with random weights, on the GPU."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return Qwen2ForCausalLM(cfg).to("cuda").eval()


def generate_tokens(model, enc, tok, *, T: int, min_new: int, seeds: list[int] | None) -> torch.Tensor:
    """What ``model.generate`` picks: greedy, or argmax under rlx's keyed Gumbel noise."""
    from transformers import LogitsProcessorList

    from rlx.plugins.hf.policy import KeyedGumbel

    extra = {"logits_processor": LogitsProcessorList([KeyedGumbel(seeds, 0.7)])} if seeds else {}
    out = model.generate(**enc, max_new_tokens=T, min_new_tokens=min_new, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **extra)
    return out[:, enc["input_ids"].shape[1]:]


def test_auto_precision_takes_bf16_on_a_gpu_that_has_it():
    from rlx.precision import choose

    chosen = choose("auto", "cuda", 1_000)  # on a GPU the policy's size does not matter
    if torch.cuda.is_bf16_supported():
        assert chosen.name == "bf16" and chosen.dtype == torch.bfloat16
        assert torch.cuda.get_device_name() in chosen.why
    else:
        assert chosen.name == "fp32" and "no bf16" in chosen.why


def test_grpo_run_from_the_cli_trains_on_the_gpu(tmp_path):
    sets = [x for kv in SMALL_RUN + ["objective.num_generations=2"] for x in ("--set", kv)]
    proc = rlx("run", "--objective", "grpo", "--reward", "prm", "--device", "cuda", "--steps", "2", "--no-progress",
               *sets, home=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    run, client = latest_run(tmp_path)
    data = client.get_run(run["mlflow_run_id"]).data
    assert data.tags["rlx.device"].startswith("cuda")
    assert data.tags["rlx.precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    for key in ("reward/mean", "kl/ref", "optim/grad_norm", "eval/accuracy"):
        assert math.isfinite(data.metrics[key]), key


@pytest.mark.parametrize("kind", ["tiny", "qwen2"])
@pytest.mark.parametrize("group", [1, 4])
def test_decode_on_the_gpu_picks_generates_tokens(tiny, kind, group):
    from rlx.plugins.hf import decode

    tok = tiny.tokenizer
    model = tiny.model.eval() if kind == "tiny" else random_qwen2(len(tok))
    assert decode.supports(model)
    prompts = [p for p in PROMPTS for _ in range(group)]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to("cuda")
    seeds = list(range(7, 7 + len(prompts)))
    for sampled in (False, True):
        for T, min_new in ((24, 24), (40, 0)):
            want = generate_tokens(model, enc, tok, T=T, min_new=min_new, seeds=seeds if sampled else None)
            got = decode.sample(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=T,
                                eos=tok.eos_token_id, pad=tok.pad_token_id, min_new_tokens=min_new, temperature=0.7,
                                seeds=seeds if sampled else None)
            assert got.device.type == "cuda"
            assert got.shape == want.shape and torch.equal(got, want), (kind, group, sampled, T, min_new)


def test_keyed_noise_is_drawn_on_the_gpu_a_step_at_a_time_and_depends_only_on_the_seed():
    from rlx.plugins.hf import decode

    dev = torch.device("cuda")
    assert decode.noise_block(dev, 64, 23) == 1  # a CUDA draw depends on its shape: one step per draw
    pair = decode.keyed_generators([3, 5], dev)
    alone = decode.keyed_generators([5], dev)
    for _ in range(3):  # the streams go on step after step
        a, b = decode.gumbel(pair, 1, 151_936), decode.gumbel(alone, 1, 151_936)
        assert a.device.type == "cuda" and a.shape == (2, 1, 151_936)
        assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])


def test_decode_runs_its_matrices_in_bf16_under_autocast(tiny, monkeypatch):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    from rlx.plugins.hf import decode

    seen = []
    layers = decode._Layers.__init__

    def spy(self, model, dtype, *args):
        seen.append(dtype)
        layers(self, model, dtype, *args)

    monkeypatch.setattr(decode._Layers, "__init__", spy)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        batch = tiny.generate(PROMPTS * 2, max_new_tokens=16, min_new_tokens=16, seeds=list(range(8)))
    assert seen == [torch.bfloat16]
    assert next(tiny.model.parameters()).dtype == torch.float32  # the weights were cast for the loop only
    assert batch["actions"].shape == (8, 16) and batch["actions"].device.type == "cuda"
    assert int(batch["actions"].max()) < len(tiny.tokenizer)


def test_shared_prompt_scoring_matches_per_row_scoring_on_the_gpu(tiny):
    prompts = [p for p in PROMPTS for _ in range(4)]
    batch = tiny.generate(prompts, max_new_tokens=20, seeds=list(range(len(prompts))))
    tiny.config.share_prompts = True
    shared, _ = tiny.log_probs(batch)
    tiny.config.share_prompts = False
    try:
        per_row, _ = tiny.log_probs(batch)
    finally:
        tiny.config.share_prompts = True
    mask = batch["mask"].bool()
    assert shared.device.type == "cuda"
    torch.testing.assert_close(shared[mask], per_row[mask], atol=1e-4, rtol=1e-4)


def test_a_ppo_step_on_the_gpu_trains_the_policy_and_its_value_head(tmp_path, monkeypatch, fresh_accelerate):
    import accelerate

    from rlx.config import compose, resolve
    from rlx.loop import train
    from rlx.registry import get_registry

    monkeypatch.setenv("RLX_HOME", str(tmp_path))
    monkeypatch.setenv("RLX_TRACKING", "off")
    prepared = {}
    prepare = accelerate.Accelerator.prepare

    def keep(self, *objs):
        out = prepare(self, *objs)
        prepared["model"] = out[0]
        return out

    monkeypatch.setattr(accelerate.Accelerator, "prepare", keep)
    reg = get_registry()
    cfg = resolve(compose(None, {"objective": "ppo", "reward": ["prm"], "steps": 2, "device": "cuda"},
                          [*SMALL_RUN, "objective.epochs=2", "run.save_policy=false"]), reg)
    result = train(cfg, reg, progress=False)
    assert result.status == "FINISHED", result
    model = prepared["model"]
    params = dict(model.named_parameters())
    assert all(p.device.type == "cuda" for p in params.values())
    head = [p for name, p in params.items() if "rlx_value_head" in name]
    assert head and any(bool(p.abs().sum() > 0) for p in head)  # trained away from its zero start
    for key in ("loss/value", "loss/policy", "optim/grad_norm"):
        assert math.isfinite(result.metrics[key]), key
