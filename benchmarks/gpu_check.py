"""rlx on one GPU, in four sections, on a Qwen2.5-0.5B-shaped model built from config
(no hub access):

1. GRPO step time, rlx against TRL's ``GRPOTrainer`` (``grpo_vs_trl.py --at-defaults``:
   each library at its own bf16 defaults), 8 prompts x 8 completions of 128 tokens;
2. sampling speed, rlx's decode loop against ``model.generate``, both through
   ``HFPolicy.generate`` on the same model and batch, under bf16 autocast;
3. model-FLOPs utilization of the policy pass (forward + backward, 6 x parameters x
   tokens) against the GPU's peak dense bf16 FLOP/s;
4. ``pytest -m gpu``: the suite's CUDA tests.

Each section prints a ``FIGURES <section> key=value ...`` line and its wall time; a
failed section is reported and the rest still run (exit 1 at the end).
``benchmarks/gpu_check.sh`` prepares the venv and runs this; ``--smoke`` runs the same
paths at toy sizes on CPU (tests/test_gpu_check.py does).

The model: Qwen2.5-0.5B's shapes (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, tied embeddings, q/k/v biases) with random weights. Text goes through
the tiny policy's char-level tokenizer (Qwen's own needs the hub), but the embedding and
LM head keep Qwen's 151,936 rows: 494M parameters as in the real model, and the per-token
work over the vocabulary (LM head, log-softmax, sampling noise) at its real size. Ids the
tokenizer lacks decode to "" in both libraries. ``--vocab 0`` sizes the vocabulary to the
tokenizer's 23 entries instead (358M parameters).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # grpo_vs_trl is a script beside this one, not a package

import grpo_vs_trl as gvt  # noqa: E402

QWEN25_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
              "intermediate_size": 4864, "vocab_size": 151_936, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
              "max_position_embeddings": 32_768, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
# the same architecture, small enough for a CPU; its vocabulary also outgrows the tokenizer's
TOY = {**QWEN25_05B, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 256}

# dense bf16 tensor-core peaks (no sparsity), TFLOP/s; the first name the device's contains wins
PEAK_BF16_TFLOPS = [("GH200", 989.0), ("H200 NVL", 835.0), ("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0),
                    ("H100", 989.0), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]
PEAK_ENV = "RLX_PEAK_TFLOPS"
SECTIONS = 4
TESTS_TIMEOUT_S = 400  # pytest -m gpu: a hung CUDA test must not hold the machine


@dataclass(frozen=True)
class Sizes:
    """The work of each section."""

    model: dict[str, Any]
    prompts: int
    generations: int
    tokens: int
    warmup: int  # GRPO steps before the timed ones
    steps: int  # timed GRPO steps
    reps: int  # timed calls in sections 2 and 3 (after one warm-up call)


FULL = Sizes(QWEN25_05B, prompts=8, generations=8, tokens=128, warmup=1, steps=3, reps=2)
SMOKE = Sizes(TOY, prompts=1, generations=2, tokens=4, warmup=0, steps=1, reps=1)


@dataclass
class Report:
    """What the sections found, for the ones after them and the summary."""

    failed: list[str] = field(default_factory=list)
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    grpo: dict[str, Any] | None = None  # the rlx child's result from section 1
    policy: Any = None  # the HFPolicy of sections 2 and 3 (rlx's sampler)
    batch: Any = None  # the batch rlx sampled in section 2


def figures(report: Report, section: str, **values: float) -> None:
    """The machine-readable line of a section (tests/test_gpu_check.py parses it)."""
    report.figures[section] = values
    print(f"FIGURES {section} " + " ".join(f"{k}={v:.6g}" for k, v in values.items()), flush=True)


def run_section(n: int, title: str, report: Report, fn: Callable[[], Any]) -> Any:
    """``fn``'s result, or None after printing why it failed; its wall time either way."""
    print(f"\n== [{n}/{SECTIONS}] {title}", flush=True)
    t = time.perf_counter()
    try:
        return fn()
    except SystemExit as exc:  # grpo_vs_trl's children report failures this way, their output already shown
        report.failed.append(title)
        print(f"[{n}/{SECTIONS}] {title} FAILED: {exc}", flush=True)
    except Exception as exc:  # one broken section must not cost the GPU time of the others
        report.failed.append(title)
        traceback.print_exc()
        print(f"[{n}/{SECTIONS}] {title} FAILED: {type(exc).__name__}: {exc}", flush=True)
    finally:
        print(f"[{n}/{SECTIONS}] {title}: {time.perf_counter() - t:.1f} s", flush=True)
    return None


# -- the model ----------------------------------------------------------------------------

def build_model(shape: dict[str, Any], vocab: int | None, folder: Path) -> tuple[Path, int, str]:
    """A ``save_pretrained`` Qwen2 directory with the tiny tokenizer, its parameter count
    and a line describing it. Saved in fp32: both libraries keep fp32 master weights."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per save is noise in a log read afterwards
    tok = AutoTokenizer.from_pretrained(gvt.TINY_CHECKPOINT)
    rows = shape["vocab_size"] if vocab is None else vocab or len(tok)
    if rows < len(tok):
        raise SystemExit(f"gpu_check: --vocab {rows} is smaller than the tokenizer's {len(tok)} entries")
    cfg = Qwen2Config(**{**shape, "vocab_size": rows}, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(gvt.SEED)
    model = Qwen2ForCausalLM(cfg)
    path = folder / "qwen2"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())  # the tied LM head counted once: one matrix, one matmul
    line = (f"Qwen2 from config: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.num_attention_heads} "
            f"heads, {cfg.num_key_value_heads} KV heads, intermediate {cfg.intermediate_size}, vocab {cfg.vocab_size} "
            f"(tokenizer: {len(tok)} chars), tied embeddings: {n:,} parameters ({n / 1e6:.3g}M), random init")
    return path, n, line


def group_prompts(sizes: Sizes) -> list[str]:
    """The first step's prompts of the GRPO runs, each repeated as a group of completions."""
    from rlx.plugins.arithmetic.env import ArithmeticEnv

    tasks = ArithmeticEnv(gvt.ENV_SETTINGS, seed=gvt.SEED).sample(sizes.prompts)
    return [t["prompt"] for t in tasks for _ in range(sizes.generations)]


# -- timing -------------------------------------------------------------------------------

def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], reps: int, device: str) -> tuple[float, Any]:
    """Median seconds of ``reps`` calls after one warm-up call (kernel selection, allocator
    growth), and the last call's result."""
    out = fn()
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bf16(device: str) -> Any:
    """What run.precision=bf16 puts around sampling and the loss: autocast over fp32 weights."""
    import torch

    return torch.autocast(device, dtype=torch.bfloat16)


# -- 1: GRPO step, rlx against TRL ----------------------------------------------------------

def section_grpo(model: Path, sizes: Sizes, device: str, report: Report) -> None:
    a = argparse.Namespace(steps=sizes.steps, warmup=sizes.warmup, prompts=sizes.prompts,
                           generations=sizes.generations, tokens=sizes.tokens, threads=0, breakdown=False,
                           at_defaults=True, rlx_set=[], device=device)
    n = sizes.prompts * sizes.generations
    runs: dict[str, dict[str, Any]] = {}
    for lib in ("rlx", "trl"):
        runs[lib] = out = gvt.run_child(lib, model, a)
        s = statistics.median(out["step_s"])
        print(f"{lib}: {s:.3f} s/step (median of {len(out['step_s'])}), {n * sizes.tokens / s:,.0f} generated tokens/s, "
              f"peak RSS {out['peak_rss_mib']:,.0f} MiB; {out['settings']['mixed precision']}", flush=True)
    report.grpo = runs["rlx"]
    print("settings (read back from each library's live objects):")
    gvt.print_settings(runs["rlx"], runs["trl"])
    step = {lib: statistics.median(r["step_s"]) for lib, r in runs.items()}
    figures(report, "grpo", rlx_s_per_step=step["rlx"], trl_s_per_step=step["trl"],
            rlx_over_trl=step["rlx"] / step["trl"],
            rlx_gen_s=statistics.median(runs["rlx"]["gen_s"]))


# -- 2: sampling, rlx's decode loop against model.generate ------------------------------------

def load_policies(model: Path, device: str) -> tuple[Any, Any]:
    """Two HFPolicy views of one model on ``device``: rlx's sampler and transformers'."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlx.plugins.hf.config import HFConfig
    from rlx.plugins.hf.policy import HFPolicy

    net = AutoModelForCausalLM.from_pretrained(model).to(device)
    tok = AutoTokenizer.from_pretrained(model)
    return (HFPolicy(HFConfig(sampler="auto"), model=net, tokenizer=tok),
            HFPolicy(HFConfig(sampler="transformers"), model=net, tokenizer=tok))


def section_sampler(model: Path, sizes: Sizes, device: str, report: Report) -> None:
    from rlx.plugins.hf import decode

    fast, plain = load_policies(model, device)
    report.policy = fast
    if not decode.supports(fast.model):
        raise RuntimeError("rlx's decode loop does not take this model: HFPolicy would call generate")
    prompts = group_prompts(sizes)
    T = sizes.tokens
    seeds = list(range(len(prompts)))  # rlx samples with per-row keyed noise: that is what sends it to the loop
    with bf16(device):
        rlx_s, batch = timed(lambda: fast.generate(prompts, max_new_tokens=T, min_new_tokens=T, seeds=seeds),
                             sizes.reps, device)
        # unseeded: generate(do_sample=True, top_k=0, top_p=1.0), as TRL samples
        hf_s, hf_batch = timed(lambda: plain.generate(prompts, max_new_tokens=T, min_new_tokens=T),
                               sizes.reps, device)
    for name, b in (("rlx", batch), ("generate", hf_batch)):
        if tuple(b["actions"].shape) != (len(prompts), T):
            raise RuntimeError(f"{name} returned {tuple(b['actions'].shape)} tokens, not {(len(prompts), T)}")
    tokens = len(prompts) * T
    print(f"{len(prompts)} completions ({sizes.prompts} prompts x {sizes.generations}) of {T} tokens, bf16 autocast "
          f"over fp32 weights, median of {sizes.reps} after a warm-up:\n"
          f"  rlx decode loop:  {rlx_s:.3f} s, {tokens / rlx_s:,.0f} tokens/s\n"
          f"  model.generate:   {hf_s:.3f} s, {tokens / hf_s:,.0f} tokens/s", flush=True)
    report.batch = batch
    figures(report, "sampler", rlx_tokens_per_s=tokens / rlx_s, generate_tokens_per_s=tokens / hf_s,
            rlx_speedup=hf_s / rlx_s)


# -- 3: model-FLOPs utilization ------------------------------------------------------------

def peak_tflops(device: str, flag: float) -> tuple[float, str]:
    """The device's peak dense bf16 TFLOP/s and where the figure came from (nan: unknown)."""
    if flag > 0:
        return flag, "--peak-tflops"
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]), PEAK_ENV
    if device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        for key, value in PEAK_BF16_TFLOPS:
            if key in name:
                return value, f"table entry {key!r} for {name!r}"
        return math.nan, f"{name!r} is not in the table: pass --peak-tflops or set {PEAK_ENV}"
    return math.nan, f"no peak for {device}: pass --peak-tflops or set {PEAK_ENV}"


def share(x: float) -> str:
    return "n/a (no peak)" if math.isnan(x) else f"{x:.1%}"


def scored_tokens(batch: Any) -> int:
    """Tokens the policy pass runs: each group's prompt once (rlx's shared-prompt scoring)
    and every completion token."""
    from rlx.plugins.hf import decode

    ids, attn = batch["input_ids"], batch["attention_mask"]
    B, T = batch["actions"].shape
    P = ids.shape[1] - T
    shared = decode.groups(ids[:, :P], attn[:, :P])
    rows = shared[0] if shared is not None else slice(None)
    return int(attn[rows, :P].sum()) + B * T


def section_mfu(model_dir: Path, sizes: Sizes, device: str, params: int, peak: tuple[float, str],
                report: Report) -> None:
    if report.policy is None:  # section 2 failed before loading it
        report.policy = load_policies(model_dir, device)[0]
    policy = report.policy
    batch = report.batch
    if batch is None:  # section 2 failed: sample the same batch here
        seeds = list(range(sizes.prompts * sizes.generations))
        with bf16(device):
            batch = policy.generate(group_prompts(sizes), max_new_tokens=sizes.tokens, min_new_tokens=sizes.tokens,
                                    seeds=seeds)
    model = policy.model
    model.train()

    def policy_pass() -> None:
        with bf16(device):
            logp, _ = policy.log_probs(batch)
        loss = -(logp * batch["mask"]).sum() / batch["mask"].sum()
        loss.backward()
        model.zero_grad(set_to_none=True)

    secs, _ = timed(policy_pass, sizes.reps, device)
    tokens = scored_tokens(batch)
    tflops = 6 * params * tokens / secs / 1e12
    value, source = peak
    print(f"policy pass (bf16 autocast, forward + backward) over {tokens:,} tokens: {secs:.3f} s, "
          f"{tflops:.3g} TFLOP/s of model FLOPs (6 x {params / 1e6:.3g}M x tokens)\n"
          f"  peak {value:g} TFLOP/s ({source}): MFU {share(tflops / value)}", flush=True)
    values = {"policy_pass_s": secs, "tflops": tflops, "mfu": tflops / value, "peak_tflops": value}
    if report.grpo:
        values.update(grpo_step_mfu(report.grpo, sizes, params, value))
    figures(report, "mfu", **values)


def grpo_step_mfu(grpo: dict[str, Any], sizes: Sizes, params: int, peak: float) -> dict[str, float]:
    """The same figure for the whole of rlx's GRPO step outside sampling (section 1):
    policy forward + backward (6) and the reference forward (2) per token, over a time
    that also holds rewards, clipping and AdamW."""
    prompts = grpo["prompts"][sizes.warmup:]
    tokens = statistics.mean(sum(len(p) for p in step) + len(step) * sizes.generations * sizes.tokens
                             for step in prompts)  # char tokenizer: one token per character
    secs = statistics.median(s - g for s, g in zip(grpo["step_s"], grpo["gen_s"]))
    tflops = 8 * params * tokens / secs / 1e12
    print(f"rlx GRPO step outside sampling (section 1): {secs:.3f} s for {tokens:,.0f} tokens, {tflops:.3g} TFLOP/s "
          f"(8 x params x tokens: policy forward + backward, reference forward): MFU {share(tflops / peak)}", flush=True)
    return {"grpo_train_s": secs, "grpo_train_tflops": tflops, "grpo_train_mfu": tflops / peak}


# -- 4: pytest -m gpu ------------------------------------------------------------------------

def junit_counts(path: Path) -> dict[str, int]:
    suites = ET.parse(path).getroot().iter("testsuite")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for s in suites:
        for k in total:
            total[k] += int(s.get(k, 0))
    return total


def section_pytest(targets: list[Path], report: Report) -> None:
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder) / "gpu.xml"
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                   f"--junitxml={xml}", *map(str, targets)], cwd=ROOT, capture_output=True, text=True,
                                  timeout=TESTS_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or b""  # bytes whatever text= says, by the docs; str in some versions
            print((out.decode(errors="replace") if isinstance(out, bytes) else out)[-4000:], flush=True)
            raise RuntimeError(f"pytest -m gpu did not finish in {TESTS_TIMEOUT_S} s") from None
        print("\n".join(proc.stdout.splitlines()[-40:]) + proc.stderr[-2000:], flush=True)
        c = junit_counts(xml) if xml.exists() else {"tests": 0, "failures": 0, "errors": 1, "skipped": 0}
    passed = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
    figures(report, "pytest_gpu", passed=passed, failed=c["failures"], errors=c["errors"], skipped=c["skipped"])
    if proc.returncode != 0:
        raise RuntimeError(f"pytest -m gpu exited {proc.returncode}"
                           + (" (no test carries the gpu marker)" if proc.returncode == 5 else ""))


# -- main -----------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="the same sections at toy sizes on CPU (for CI)")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help=f"the device's peak dense bf16 TFLOP/s (default: ${PEAK_ENV}, else a table by GPU name)")
    ap.add_argument("--vocab", type=int, default=None,
                    help="vocabulary rows of the model (default: Qwen's 151936, 256 with --smoke; 0: the "
                         "tokenizer's 23)")
    a = ap.parse_args()
    import torch

    device = "cpu" if a.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: torch {torch.__version__} sees no CUDA device; run with --smoke for the CPU check")
    sizes = SMOKE if a.smoke else FULL
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke: toy sizes)"
    print(f"gpu_check on {where}, torch {torch.__version__}: {sizes.prompts} prompts x {sizes.generations} "
          f"completions of {sizes.tokens} tokens", flush=True)
    report = Report()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlx-gpu-check-") as folder:
        t = time.perf_counter()
        model, params, line = build_model(sizes.model, a.vocab, Path(folder))
        print(f"{line}\n[0/{SECTIONS}] model built and saved: {time.perf_counter() - t:.1f} s", flush=True)
        peak = peak_tflops(device, a.peak_tflops)
        run_section(1, "grpo: rlx vs TRL step time", report, lambda: section_grpo(model, sizes, device, report))
        run_section(2, "sampler: rlx decode loop vs model.generate", report,
                    lambda: section_sampler(model, sizes, device, report))
        run_section(3, "mfu: policy pass", report, lambda: section_mfu(model, sizes, device, params, peak, report))
    report.policy = report.batch = None  # the tests below get the GPU's memory
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    # the smoke run collects only the GPU test module: the whole suite's collection takes longer than the rest
    targets = [ROOT / "tests" / "test_gpu.py"] if a.smoke else [ROOT / "tests"]
    run_section(4, "pytest -m gpu", report, lambda: section_pytest(targets, report))
    print("\nsummary:")
    for section, values in report.figures.items():
        print(f"  {section}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    print(f"gpu_check: {time.perf_counter() - t0:.1f} s in all; "
          + (f"FAILED: {', '.join(report.failed)}" if report.failed else "every section ran"), flush=True)
    if report.failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
