"""``run.precision``: which arithmetic a run trains and samples in.

fp32 everywhere, or bf16 (fp16 on CUDA) through accelerate's mixed precision: the policy's
forward runs under autocast while its master weights, gradients and AdamW state stay fp32;
sampling and the reference model compute in the same low-precision dtype. ``auto`` takes
bf16 where the hardware runs it fast and the model is big enough for that to show, fp32
elsewhere; the choice and its reason are tagged on the run (``rlx.precision``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

from rlx.errors import UsageError

# below this many policy parameters bf16 buys nothing on a CPU, only its rounding: the casts
# cost what the faster matrix products save. It depends on the matrix unit. AVX512-BF16
# (measured on such a CPU, 64 x 32-token GRPO steps): 0.44-0.50 s in bf16 and in fp32 at
# 0.86M parameters, 3.6-3.9 s against ~6 s at 27M. AMX (measured on such a CPU, forward and
# backward of 64 x 44 tokens through the hf policy's attention and norms): bf16 took 1.04x
# fp32's time at 0.04M parameters, 0.86x at 0.28M, 0.66x at 0.86M, 0.69x at 2.9M.
AUTO_MIN_PARAMETERS = {"amx_bf16": 250_000, "avx512_bf16": 5_000_000}

ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class Precision:
    """The resolved choice: ``name`` (fp32, bf16, fp16) and why it was made."""

    name: str
    why: str

    @property
    def accelerate(self) -> str:
        """The value of accelerate's ``mixed_precision``."""
        return ACCELERATE[self.name]

    @property
    def dtype(self) -> Any:
        """The torch dtype low-precision work runs in (float32 for fp32)."""
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]


def cpu_features() -> dict[str, bool]:
    """torch's reading of this CPU's instruction sets (``avx2``, ``amx_bf16``, ...); empty
    when this torch cannot tell, which callers read as "none of them"."""
    import torch

    try:
        return dict(torch.cpu.get_capabilities())
    except (AttributeError, RuntimeError):
        return {}


def cpu_bf16() -> str:
    """The CPU feature that makes bf16 matrix products fast (``amx_bf16`` or ``avx512_bf16``),
    or "" when it has none and torch would emulate them."""
    caps = cpu_features()
    return next((f for f in ("amx_bf16", "avx512_bf16") if caps.get(f)), "")


def choose(requested: str, device_type: str, parameters: int) -> Precision:
    """``run.precision`` resolved for a policy of ``parameters`` on ``device_type``."""
    import torch

    cuda = device_type == "cuda"
    if requested == "fp16":
        if not cuda:
            raise UsageError("run.precision=fp16 needs a CUDA GPU (CPUs have no fast fp16 training); "
                             "use run.precision=bf16 or fp32")
        return Precision("fp16", "asked for")
    if requested == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise UsageError("run.precision=bf16 but this GPU has no bf16 support; use run.precision=fp16 or fp32")
        return Precision("bf16", "asked for")
    if requested == "fp32":
        return Precision("fp32", "asked for")
    if cuda:
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: {torch.cuda.get_device_name()} supports bf16")
        return Precision("fp32", "auto: this GPU has no bf16 support")
    if device_type != "cpu":
        return Precision("fp32", f"auto: fp32 on {device_type}")
    feature = cpu_bf16()
    if not feature:
        return Precision("fp32", "auto: this CPU has no AMX or AVX512-BF16 (bf16 would be emulated)")
    least = AUTO_MIN_PARAMETERS[feature]
    if parameters < least:
        return Precision("fp32", f"auto: the policy's {parameters / 1e6:.2f}M parameters are below "
                                 f"{least / 1e6:g}M, where bf16 stops paying on a CPU with {feature}")
    return Precision("bf16", f"auto: CPU has {feature}, policy has {parameters / 1e6:.1f}M parameters")


def slow_bf16_warning(precision: Precision, device_type: str) -> str:
    """A warning for bf16 asked for on a CPU that emulates it, else ""."""
    if precision.name == "bf16" and device_type == "cpu" and not cpu_bf16():
        return ("run.precision=bf16 on a CPU without AMX or AVX512-BF16: torch emulates bf16 there, "
                "usually slower than fp32 (run.precision=auto picks for you)")
    return ""


def flushing_denormals() -> bool:
    """Whether this thread's CPU arithmetic flushes denormal floats (``denormals_flushed``):
    a thread a plugin starts begins without, and should copy the setting of the thread that
    starts it (``torch.set_flush_denormal``)."""
    import torch

    # 1e-39 is denormal in float32: it survives a multiplication only when not flushed
    return float(torch.tensor([1e-39], dtype=torch.float32).mul_(1.0)) == 0.0


@contextlib.contextmanager
def denormals_flushed(on: bool) -> Iterator[None]:
    """Within: denormal floats on this thread's CPU arithmetic are zero (FTZ/DAZ), if ``on``
    and the CPU supports it; afterwards as torch starts (not flushed).

    Why: as a network trains, some values (an Adam second moment of a gradient that is
    almost always zero, ReLU outputs near zero) sink below float32's normal range, where
    x86 CPUs take tens of cycles per operation instead of one. Measured on DQN's CartPole
    set (a [256, 256] Q-network, 128 gradient steps per update): 0.26 s per update without,
    0.217 s with, the same after the first quarter of the run as at its start."""
    import torch

    flushed = on and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)
