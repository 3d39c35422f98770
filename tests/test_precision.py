"""``run.precision``: what ``auto`` picks and why, the refusals, and that a bf16 step
really computes in bf16 (autocast around sampling, the reference and the loss) while the
master weights and AdamW's state stay fp32."""

from __future__ import annotations

import pytest
import torch

from rlx import precision
from rlx.errors import UsageError


@pytest.fixture
def cpu_has(monkeypatch):
    def set_feature(feature: str) -> None:
        monkeypatch.setattr(precision, "cpu_bf16", lambda: feature)
    return set_feature


def test_auto_picks_bf16_on_a_bf16_cpu_for_a_big_enough_policy(cpu_has):
    cpu_has("avx512_bf16")
    big = precision.choose("auto", "cpu", 27_000_000)
    assert big.name == "bf16" and big.accelerate == "bf16" and big.dtype == torch.bfloat16
    assert "avx512_bf16" in big.why and "27.0M" in big.why
    small = precision.choose("auto", "cpu", 860_000)
    assert small.name == "fp32" and small.accelerate == "no" and "0.86M" in small.why


def test_with_amx_auto_takes_bf16_from_a_smaller_policy(cpu_has):
    """AMX multiplies bf16 matrices fast enough to pay from about a quarter of a million
    parameters; an MLP of a few thousand stays fp32."""
    cpu_has("amx_bf16")
    assert precision.choose("auto", "cpu", 860_000).name == "bf16"
    mlp = precision.choose("auto", "cpu", 4_610)
    assert mlp.name == "fp32" and "0.25M" in mlp.why and "amx_bf16" in mlp.why


def test_auto_stays_fp32_where_bf16_would_be_emulated(cpu_has):
    cpu_has("")
    chosen = precision.choose("auto", "cpu", 500_000_000)
    assert chosen.name == "fp32" and "AMX or AVX512-BF16" in chosen.why
    assert precision.choose("auto", "mps", 500_000_000).name == "fp32"


def test_asked_for_is_taken_and_an_emulated_bf16_is_warned_about(cpu_has):
    cpu_has("")
    assert precision.choose("fp32", "cpu", 10**9).name == "fp32"
    chosen = precision.choose("bf16", "cpu", 10)
    assert chosen.name == "bf16" and chosen.why == "asked for"
    assert "emulates bf16" in precision.slow_bf16_warning(chosen, "cpu")
    cpu_has("amx_bf16")
    assert precision.slow_bf16_warning(chosen, "cpu") == ""


def test_fp16_needs_a_gpu():
    with pytest.raises(UsageError, match="fp16 needs a CUDA GPU.*bf16 or fp32"):
        precision.choose("fp16", "cpu", 10)


def test_the_cpu_feature_query_matches_torchs_capabilities():
    caps = torch.cpu.get_capabilities()
    want = "amx_bf16" if caps.get("amx_bf16") else "avx512_bf16" if caps.get("avx512_bf16") else ""
    assert precision.cpu_bf16() == want


def test_a_bf16_run_keeps_fp32_master_weights_and_optimizer_state(tmp_path, monkeypatch):
    """In process: the loop's own Accelerator in bf16; the policy's parameters, their
    gradients and AdamW's moments are fp32, and the decode loop ran its matrices in bf16."""
    from rlx.config import compose, resolve
    from rlx.loop import train
    from rlx.plugins.hf import decode
    from rlx.registry import get_registry

    monkeypatch.setenv("RLX_HOME", str(tmp_path))
    monkeypatch.setenv("RLX_TRACKING", "off")
    seen: dict[str, object] = {}
    layers = decode._Layers.__init__

    def spy(self, model, dtype, rows=None):
        seen["decode"] = dtype
        layers(self, model, dtype, rows)

    monkeypatch.setattr(decode._Layers, "__init__", spy)
    import accelerate

    prepare = accelerate.Accelerator.prepare

    def keep(self, *objs):
        out = prepare(self, *objs)
        seen["optimizer"] = out[1]
        seen["model"] = out[0]
        return out

    monkeypatch.setattr(accelerate.Accelerator, "prepare", keep)
    reg = get_registry()
    cfg = resolve(compose(None, {"objective": "grpo", "reward": ["prm"], "steps": 2},
                          ["run.precision=bf16", "run.batch_size=2", "objective.num_generations=2",
                           "env.eval_size=4", "generation.max_new_tokens=8", "run.save_policy=false"]), reg)
    result = train(cfg, reg, progress=False)
    assert result.status == "FINISHED" and result.precision.startswith("bf16 (asked for")
    assert seen["decode"] == torch.bfloat16
    params = list(seen["model"].parameters())
    assert all(p.dtype == torch.float32 for p in params)
    state = seen["optimizer"].optimizer.state
    moments = [v for s in state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(m.dtype == torch.float32 for m in moments)


def test_denormals_are_flushed_inside_and_not_after():
    """run.flush_denormal's context: a product below float32's normal range is zero inside,
    and torch's own behaviour (kept) returns on leaving, also after an error."""
    from rlx.precision import denormals_flushed

    tiny = torch.tensor([1e-30], dtype=torch.float32)

    def product() -> float:
        return float((tiny * tiny.new_tensor([1e-10]))[0])

    assert product() > 0  # torch's default: denormals kept
    with denormals_flushed(True):
        assert product() == 0.0
    assert product() > 0
    with pytest.raises(RuntimeError), denormals_flushed(True):
        raise RuntimeError("boom")
    assert product() > 0
    with denormals_flushed(False):
        assert product() > 0
