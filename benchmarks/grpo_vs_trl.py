"""rlx ``grpo`` against TRL's ``GRPOTrainer`` doing the same GRPO work, side by side.

Same char-level Llama (``tiny``: the shipped checkpoint's weights and architecture;
``medium``: the same architecture at hidden 512, 8 layers, 8 heads, intermediate 1536,
built from config with seed 0), same arithmetic prompts in the same order, the same
reward (the arithmetic environment's ``is_correct``: 1.0 right, 0.0 wrong), 8 prompts x
8 completions of exactly 32 new tokens per step (EOS suppressed), one optimizer step per
batch, the same AdamW, learning rate, clipping, KL beta (0.04: both run a reference
model) and loss aggregation (``grpo``), no vLLM: TRL samples with transformers'
``generate``, rlx with its own KV-cache loop over the same transformers model (it picks
the same tokens as ``generate``; ``--rlx-set policy.sampler=transformers`` makes rlx call
``generate`` too, ``--rlx-set policy.share_prompts=false`` scores each row's prompt
separately as TRL does). Needs the ``bench`` extra (trl).

    python benchmarks/grpo_vs_trl.py                                  # both sizes, 5 timed steps, 2 rounds
    python benchmarks/grpo_vs_trl.py --size tiny --rounds 3
    python benchmarks/grpo_vs_trl.py --size medium --steps 2 --rounds 1
    python benchmarks/grpo_vs_trl.py --size tiny --breakdown          # where each library's step goes
    python benchmarks/grpo_vs_trl.py --at-defaults                    # each library at its own defaults
    python benchmarks/grpo_vs_trl.py --size tiny --steps 1 --warmup 0 --rounds 1 --prompts 2 --tokens 4  # smoke

Two modes. Matched (the default): both in fp32, no gradient checkpointing, the same
single-tensor AdamW: the same arithmetic, so the ratio is of the implementations.
``--at-defaults``: the same work (model, prompts, reward, group size, completion length,
steps, learning settings) with each library's own recommended performance settings: TRL's
GRPOConfig defaults (bf16 autocast on CPU, gradient checkpointing, fused AdamW) and rlx's
(``run.precision=auto``, its default AdamW kernel): what a user of each gets.

Each library runs in its own subprocess per round (rlx, trl, rlx, trl, ...), so peak RSS
is each one's own. Warm-up steps are excluded. s/step is the library's own step: rlx's
``perf/step_s`` (sampling, scoring, reference and policy passes, backward, AdamW) and, for
TRL, wall time from ``on_step_begin`` to ``on_step_end`` of a TrainerCallback (the same
work; TRL's dataloader fetch and logging fall outside). "interval" is the wall time between
consecutive step ends, everything included; "CPU" the process's CPU time per step (less
disturbed than wall time when other work shares the machine). The settings table is read
back from each library's live objects (config, generation config, the AdamW actually built),
and the prompts each library trained on are compared. rlx starts MLflow's writer process
early, as ``rlx run`` does (``rlx.tracking.prewarm`` where it exists; without it the
writer's ~2 s MLflow import overlaps the first steps, so use ``--warmup 3`` or more).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY_CHECKPOINT = ROOT / "plugins" / "tiny" / "checkpoint"
MEDIUM = {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
          "intermediate_size": 1536, "head_dim": 64}
RESULT = "RESULT "

# What both libraries are given (the rest of each is printed from its live objects).
LR = 1e-4
BETA = 0.04
LOSS_TYPE = "grpo"
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.0
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SEED = 0
ENV_SETTINGS = {"eval_size": 1}  # the held-out split is not used; the training draws are the same in both


# -- the models ---------------------------------------------------------------------------

def prepare_model(size: str, folder: Path) -> tuple[Path, str]:
    """A ``save_pretrained`` directory for ``size`` and a line describing it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    if size == "tiny":
        path = TINY_CHECKPOINT
        model = AutoModelForCausalLM.from_pretrained(path)
        origin = "the shipped tiny checkpoint (weights and architecture)"
    else:
        cfg = AutoConfig.from_pretrained(TINY_CHECKPOINT)
        for k, v in MEDIUM.items():
            setattr(cfg, k, v)
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(cfg)
        path = folder / size
        model.save_pretrained(path)
        AutoTokenizer.from_pretrained(TINY_CHECKPOINT).save_pretrained(path)
        origin = "built from the tiny config with the sizes above, random init (seed 0)"
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    line = (f"{size}: char-level Llama, hidden {c.hidden_size}, {c.num_hidden_layers} layers, "
            f"{c.num_attention_heads} heads, intermediate {c.intermediate_size}, vocab {c.vocab_size}, "
            f"{'tied' if c.tie_word_embeddings else 'untied'} embeddings: {n:,} parameters ({n / 1e6:.2f}M); {origin}")
    return path, line


# -- measurement helpers used inside the children ----------------------------------------------

class Phases:
    """Optional per-phase wall time (``--breakdown``), by wrapping the same functions in both
    libraries: transformers' ``generate`` (and the decoder forwards inside it), decoder
    forwards without gradient (reference / old log-probs), with gradient (policy),
    ``Tensor.backward``, gradient clipping, ``AdamW.step`` and each library's reward call."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.in_generate = False

    def add(self, key: str, dt: float) -> None:
        self.total[key] = self.total.get(key, 0.0) + dt

    def wrap(self, owner: Any, name: str, key: Any) -> None:
        fn = getattr(owner, name)
        phases = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            k = key() if callable(key) else key
            if k is None:
                return fn(*args, **kwargs)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases.add(k, time.perf_counter() - t)

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        setattr(owner, name, timed)

    def install(self) -> None:
        import torch
        from transformers.generation.utils import GenerationMixin
        from transformers.models.llama.modeling_llama import LlamaModel

        gen = GenerationMixin.generate
        phases = self

        def generate(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            phases.in_generate = True
            try:
                return gen(*args, **kwargs)
            finally:
                phases.in_generate = False
                phases.add("generate", time.perf_counter() - t)

        GenerationMixin.generate = generate  # type: ignore[method-assign]

        def forward_key() -> str:
            if self.in_generate:
                return "  of which model forward"
            return "policy forward" if torch.is_grad_enabled() else "no-grad forward (ref)"

        self.wrap(LlamaModel, "forward", forward_key)
        self.wrap(torch.Tensor, "backward", "backward")
        self.wrap(torch.nn.utils, "clip_grad_norm_", "clip grad")
        self.wrap(torch.optim.AdamW, "step", "optimizer step")

    def snapshot(self) -> dict[str, float]:
        return dict(self.total)


def capture_adamw() -> dict[str, Any]:
    """Records the settings of every AdamW built from now on (the live optimizer's defaults)."""
    import torch

    seen: dict[str, Any] = {}
    init = torch.optim.AdamW.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        d = self.defaults
        seen.update({"class": f"{type(self).__module__}.{type(self).__name__}", "lr": d["lr"],
                     "betas": tuple(d["betas"]), "eps": d["eps"], "weight_decay": d["weight_decay"],
                     "kernel": adamw_kernel(self)})

    torch.optim.AdamW.__init__ = patched  # type: ignore[method-assign]
    return seen


def adamw_kernel(opt: Any) -> str:
    """The AdamW implementation ``step`` will run: fused, foreach or single-tensor (torch
    resolves foreach=None by device: the for-loop on CPU)."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    d = opt.defaults
    if d.get("fused"):
        return "fused"
    foreach = d.get("foreach")
    if foreach is None:
        params = [p for g in opt.param_groups for p in g["params"]]
        foreach = _default_to_fused_or_foreach(params, bool(d.get("differentiable")), use_fused=False)[1]
        return f"{'foreach' if foreach else 'single-tensor'} (foreach=None)"
    return "foreach" if foreach else "single-tensor (foreach=False)"


def finish(out: dict[str, Any]) -> None:
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT + json.dumps(out), flush=True)


def phase_deltas(marks: list[dict[str, float]], first: int) -> list[dict[str, float]]:
    """Per-step phase times from cumulative snapshots taken at step boundaries."""
    out = []
    for a, b in zip(marks[first:-1], marks[first + 1:]):
        out.append({k: b.get(k, 0.0) - a.get(k, 0.0) for k in b})
    return out


# -- rlx ----------------------------------------------------------------------------------

def child_rlx(a: argparse.Namespace) -> None:
    home = tempfile.mkdtemp(prefix="rlx-bench-")
    os.environ["RLX_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:  # as `rlx run` does: MLflow's writer process imports while torch loads, not while it trains
        from rlx.tracking import prewarm
    except ImportError:  # an rlx without it: the writer starts with the run and imports during the first steps
        prewarm = None
    if prewarm is not None:
        prewarm()
    import torch

    from rlx.hookspecs import hookimpl
    from rlx.plugins.hf import decode

    adamw = capture_adamw()
    phases = Phases() if a.breakdown else None
    if phases:
        phases.install()
        import rlx.reward
        import rlx.small_steps

        phases.wrap(rlx.reward, "combine", "reward")
        phases.wrap(decode, "sample", "generate")
        phases.wrap(rlx.small_steps, "clip_grads", "clip grad")

    class Collector:
        def __init__(self) -> None:
            self.metrics: list[dict[str, float]] = []
            self.ends: list[float] = []
            self.cpu: list[float] = []
            self.marks: list[dict[str, float]] = [phases.snapshot()] if phases else []
            self.dtype: Any = None
            self.sampler = "?"
            self.shared = False

        @hookimpl
        def rlx_run_start(self, run_id: str, config: dict) -> None:  # the baseline of the first interval
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        @hookimpl
        def rlx_step_end(self, step: int, metrics: dict) -> None:
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())
            self.metrics.append(dict(metrics))
            if phases:
                self.marks.append(phases.snapshot())

    total = a.warmup + a.steps
    try:
        from rlx.config import compose, resolve
        from rlx.loop import train
        from rlx.plugins.arithmetic.env import ArithmeticEnv
        from rlx.plugins.tiny.policy import TinyPolicy
        from rlx.registry import get_registry

        drawn: list[list[str]] = []
        sample = ArithmeticEnv.sample

        def record(self: Any, n: int) -> list[dict]:  # the prompts of each step, to compare with TRL's
            tasks = sample(self, n)
            drawn.append([t["prompt"] for t in tasks])
            return tasks

        ArithmeticEnv.sample = record  # type: ignore[method-assign]

        reg = get_registry()
        col = Collector()
        init = TinyPolicy.__init__

        def policy_init(self: Any, *args: Any, **kwargs: Any) -> None:  # the live policy's dtype and paths
            init(self, *args, **kwargs)
            col.dtype = next(self.model.parameters()).dtype
            col.sampler = ("rlx decode loop (KV cache, same tokens as generate)"
                           if self.config.sampler == "auto" and decode.supports(self.model)
                           else "transformers generate (KV cache)")
            col.shared = self.config.share_prompts

        TinyPolicy.__init__ = policy_init  # type: ignore[method-assign]
        reg.pm.register(col, name="grpo-vs-trl-collector")
        sets = [f"policy.path={a.model}", f"objective.num_generations={a.generations}",
                f"run.batch_size={a.prompts}", f"generation.max_new_tokens={a.tokens}",
                f"generation.min_new_tokens={a.tokens}", "generation.temperature=1.0",
                f"objective.beta={BETA}", f"objective.loss_type={LOSS_TYPE}", "objective.scale_rewards=group",
                # TRL's default: the k3 term weighted by the importance ratio
                "objective.use_bias_correction_kl=true",
                "objective.epsilon=0.2", "objective.num_iterations=1", "objective.num_minibatches=1",
                f"optim.lr={LR}", f"optim.weight_decay={WEIGHT_DECAY}", f"optim.max_grad_norm={MAX_GRAD_NORM}",
                "optim.schedule=constant", "optim.warmup_steps=0",
                # matched: TRL's single-tensor AdamW and fp32; at defaults: rlx's own choices
                *([] if a.at_defaults else ["optim.kernel=single", "run.precision=fp32"]),
                "run.eval_every=0", "run.save_policy=false", "run.checkpoint_every=0", "run.samples_to_log=0",
                f"run.device={a.device}", "reward.verifier.correct=1.0", "reward.verifier.incorrect=0.0",
                *[f"env.{k}={v}" for k, v in ENV_SETTINGS.items()]]
        if a.threads:
            sets.append(f"run.threads={a.threads}")
        sets += a.rlx_set or []
        cfg = resolve(compose(None, {"objective": "grpo", "reward": ["verifier"], "policy": "tiny",
                                     "steps": total, "seed": SEED}, sets), reg)
        result = train(cfg, reg, progress=False)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if result.status != "FINISHED":
        raise SystemExit(f"rlx run ended {result.status}")
    d = cfg.to_dict()
    obj, gen, opt = d["objective"], d["generation"], d["optim"]
    timed = col.metrics[a.warmup:]
    out = {
        "step_s": [m["perf/step_s"] for m in timed],
        # ends[0] is the run's start (the first interval also holds rlx's evaluation before training)
        "interval_s": [col.ends[i] - col.ends[i - 1] for i in range(a.warmup + 1, len(col.ends))],
        "cpu_s": [col.cpu[i] - col.cpu[i - 1] for i in range(a.warmup + 1, len(col.cpu))],
        "gen_s": [m["perf/gen_s"] for m in timed],
        "completion_len": [m["completion/length"] for m in col.metrics],
        "reward_mean": statistics.mean(m["reward/mean"] for m in col.metrics),
        "prompts": drawn,
        "threads": torch.get_num_threads(),
        "settings": {
            "model": f"{a.model} (policy tiny, policy.path)",
            "model dtype": str(col.dtype).replace("torch.", ""),
            "prompts per step": d["run"]["batch_size"],
            "completions per prompt": obj["num_generations"],
            "completions per optimizer step": d["run"]["batch_size"] * obj["num_generations"] // obj["num_minibatches"],
            "new tokens (min / max)": f"{gen['min_new_tokens']} / {gen['max_new_tokens']}",
            "sampling": f"temperature {gen['temperature']}, full distribution (Gumbel-max, per-row seeds)",
            "generation backend": col.sampler,
            "prompt pass per group (scoring)": "once" if col.shared else "once per row",
            "reward": f"verifier: env.is_correct -> {d['reward']['verifier']['correct']} / "
                      f"{d['reward']['verifier']['incorrect']}",
            "advantage scaling": obj["scale_rewards"],
            "loss_type": obj["loss_type"],
            "epsilon (low / high)": f"{obj['epsilon']} / {obj['epsilon_high'] or obj['epsilon']}",
            "importance sampling level": obj["importance_sampling_level"],
            "KL beta (k3, reference model)": f"{obj['beta']} (ref model: {obj['beta'] > 0})",
            "KL weighted by the ratio": obj["use_bias_correction_kl"],
            "num_iterations / grad accumulation": f"{obj['num_iterations']} / 1",
            "optimizer": adamw.get("class"),
            "lr": adamw.get("lr"),
            "betas / eps": f"{adamw.get('betas')} / {adamw.get('eps')}",
            "weight decay": adamw.get("weight_decay"),
            "AdamW kernel": adamw.get("kernel"),
            "lr schedule": f"{opt['schedule']}, warm-up {opt['warmup_steps']}",
            "max grad norm": opt["max_grad_norm"],
            "gradient checkpointing": "no (not supported)",
            # what run.precision resolved to, where the rlx measured reports it
            "mixed precision": getattr(result, "precision", "") or d["run"].get("precision", "no (fp32)"),
            "torch threads": torch.get_num_threads(),
            "seed": d["run"]["seed"],
            "steps (warm-up + timed)": f"{a.warmup} + {a.steps}",
        },
    }
    if phases:
        out["phases"] = phase_deltas(col.marks, a.warmup)
    finish(out)


# -- TRL ------------------------------------------------------------------------------------

def child_trl(a: argparse.Namespace) -> None:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    adamw = capture_adamw()
    phases = Phases() if a.breakdown else None
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlx.plugins.arithmetic.env import ArithmeticEnv

    if phases:
        phases.install()
        phases.wrap(GRPOTrainer, "_calculate_rewards", "reward")

    total = a.warmup + a.steps
    env = ArithmeticEnv(ENV_SETTINGS, seed=SEED)
    # the prompts rlx draws: the same environment, seed and draws of `prompts` per step
    tasks = [t for _ in range(total) for t in env.sample(a.prompts)]
    data = Dataset.from_list([{"prompt": t["prompt"], "answer": t["answer"]} for t in tasks])

    seen: list[list[str]] = []

    def arithmetic_correct(prompts: list[str], completions: list[str], answer: list[int], **_: Any) -> list[float]:
        seen.append(prompts[::a.generations])
        return [1.0 if env.is_correct({"answer": ans}, c) else 0.0 for c, ans in zip(completions, answer)]

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.step_s: list[float] = []
            self.ends: list[float] = []
            self.cpu: list[float] = []
            self.c0 = 0.0
            self.lengths: list[tuple[float, float]] = []
            self.rewards: list[float] = []
            self.marks: list[dict[str, float]] = []
            self.t0 = 0.0
            self.trainer: Any = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()
            self.c0 = time.process_time()
            if phases:
                self.marks.append(phases.snapshot())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            t = time.perf_counter()
            self.step_s.append(t - self.t0)
            self.ends.append(t)
            self.cpu.append(time.process_time() - self.c0)
            if phases:
                self.marks.append(phases.snapshot())
            m = self.trainer._metrics["train"]
            self.lengths.append((m["completions/min_length"][-1], m["completions/max_length"][-1]))
            self.rewards.append(m["reward"][-1])

    with tempfile.TemporaryDirectory() as out_dir:
        args = GRPOConfig(
            output_dir=out_dir, per_device_train_batch_size=a.prompts * a.generations, gradient_accumulation_steps=1,
            num_generations=a.generations, max_completion_length=a.tokens,
            generation_kwargs={"min_new_tokens": a.tokens}, temperature=1.0, top_p=1.0, top_k=0,
            beta=BETA, loss_type=LOSS_TYPE, scale_rewards="group", epsilon=0.2, num_iterations=1,
            importance_sampling_level="token", learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
            optim="adamw_torch_fused" if a.at_defaults else "adamw_torch", adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=ADAM_EPS,
            weight_decay=WEIGHT_DECAY, max_grad_norm=MAX_GRAD_NORM, max_steps=total, shuffle_dataset=False,
            seed=SEED, use_cpu=a.device == "cpu", report_to="none",
            logging_strategy="no", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
            log_completions=False, use_vllm=False,
            # matched: rlx's fp32 and no recomputation; --at-defaults: TRL's own (bf16 autocast on
            # CPU, gradient checkpointing, fused AdamW)
            **({} if a.at_defaults else {"bf16": False, "fp16": False, "gradient_checkpointing": False}))
        tok = AutoTokenizer.from_pretrained(a.model, padding_side="left")
        timer = Timer()
        trainer = GRPOTrainer(model=a.model, reward_funcs=arithmetic_correct, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[timer])
        timer.trainer = trainer
        trainer.train()
    g = trainer.generation_config
    model = trainer.model
    pg = trainer.optimizer.param_groups[0]
    out = {
        "step_s": timer.step_s[a.warmup:],
        "interval_s": [t1 - t0 for t0, t1 in zip(timer.ends[max(a.warmup - 1, 0):], timer.ends[max(a.warmup, 1):])],
        "cpu_s": timer.cpu[a.warmup:],
        "completion_len": [x for pair in timer.lengths for x in pair],
        "reward_mean": statistics.mean(timer.rewards),
        "prompts": seen,
        "threads": torch.get_num_threads(),
        "settings": {
            "model": f"{a.model} (GRPOTrainer(model=path))",
            "model dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "prompts per step": args.generation_batch_size // args.num_generations,
            "completions per prompt": args.num_generations,
            "completions per optimizer step": args.per_device_train_batch_size * args.gradient_accumulation_steps,
            "new tokens (min / max)": f"{g.min_new_tokens} / {g.max_new_tokens}",
            "sampling": f"temperature {g.temperature}, do_sample {g.do_sample}, top_k {g.top_k}, top_p {g.top_p}",
            "generation backend": f"transformers generate (use_vllm {args.use_vllm}, continuous batching "
                                  f"{args.use_transformers_continuous_batching})",
            "prompt pass per group (scoring)": "once per row",
            "reward": f"{arithmetic_correct.__name__}: env.is_correct -> 1.0 / 0.0",
            "advantage scaling": args.scale_rewards,
            "loss_type": args.loss_type,
            "epsilon (low / high)": f"{args.epsilon} / {args.epsilon_high or args.epsilon}",
            "importance sampling level": args.importance_sampling_level,
            "KL beta (k3, reference model)": f"{args.beta} (ref model: {trainer.ref_model is not None})",
            "KL weighted by the ratio": args.use_bias_correction_kl,
            "num_iterations / grad accumulation": f"{args.num_iterations} / {args.gradient_accumulation_steps}",
            "optimizer": adamw.get("class"),
            "lr": pg.get("initial_lr", pg["lr"]),
            "betas / eps": f"{tuple(pg['betas'])} / {pg['eps']}",
            "weight decay": pg["weight_decay"],
            "AdamW kernel": adamw_kernel(trainer.optimizer),
            "lr schedule": f"{args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, 'value') else args.lr_scheduler_type}"
                           f", warm-up {args.warmup_steps}",
            "max grad norm": args.max_grad_norm,
            "gradient checkpointing": args.gradient_checkpointing,
            "mixed precision": f"bf16 {args.bf16}, fp16 {args.fp16}",
            "torch threads": torch.get_num_threads(),
            "seed": args.seed,
            "steps (warm-up + timed)": f"{a.warmup} + {a.steps}",
        },
    }
    if phases:
        # marks alternate begin, end: keep [begin, end] pairs of the timed steps
        pairs = list(zip(timer.marks[0::2], timer.marks[1::2]))[a.warmup:]
        out["phases"] = [{k: e.get(k, 0.0) - b.get(k, 0.0) for k in e} for b, e in pairs]
    finish(out)


# -- the parent -----------------------------------------------------------------------------

def run_once_more_if_killed(lib: str, cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """A child's run; once more if a signal killed it (a TRL child once died of SIGSEGV in
    CI, not reproduced in 62 runs here), its stack (PYTHONFAULTHANDLER) written to stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode < 0:
        sys.stderr.write(proc.stderr[-8000:])
        print(f"the {lib} child was killed by signal {-proc.returncode} (its stack is on stderr); running it again",
              flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return proc


def run_child(lib: str, model: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", lib, "--model", str(model),
           "--steps", str(a.steps), "--warmup", str(a.warmup), "--prompts", str(a.prompts),
           "--generations", str(a.generations), "--tokens", str(a.tokens), "--threads", str(a.threads),
           "--device", a.device]
    if a.breakdown:
        cmd.append("--breakdown")
    if a.at_defaults:
        cmd.append("--at-defaults")
    for kv in a.rlx_set or []:
        cmd += ["--rlx-set", kv]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a child that crashes prints where, in every thread
    proc = run_once_more_if_killed(lib, cmd, env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"the {lib} child failed (exit {proc.returncode})")
    return json.loads(lines[-1][len(RESULT):])


def print_settings(rlx: dict[str, Any], trl: dict[str, Any]) -> None:
    keys = list(rlx["settings"])
    w = max(len(k) for k in keys) + 2
    wr = max(32, max(len(str(v)) for v in rlx["settings"].values()) + 2)
    print(f"  {'setting':<{w}}{'rlx':<{wr}}trl")
    for k in keys:
        r, t = str(rlx["settings"][k]), str(trl["settings"].get(k, "-"))
        print(f"  {k:<{w}}{r:<{wr}}{t}")
    same = rlx["prompts"] == trl["prompts"]
    print(f"  prompts: {'the same' if same else 'DIFFERENT'} in both ({len(rlx['prompts'])} steps x "
          f"{len(rlx['prompts'][0]) if rlx['prompts'] else 0}; first: {rlx['prompts'][0][0]!r})")
    for name, res in (("rlx", rlx), ("trl", trl)):
        lens = res["completion_len"]
        print(f"  {name} completion lengths seen: min {min(lens):.0f}, max {max(lens):.0f}; "
              f"mean reward {res['reward_mean']:.3f}")


def print_breakdown(name: str, res: dict[str, Any]) -> None:
    steps = res["phases"]
    step = statistics.median(res["step_s"])
    keys = [k for k in ("generate", "  of which model forward", "reward", "no-grad forward (ref)", "policy forward",
                        "backward", "clip grad", "optimizer step") if any(k in s for s in steps)]
    med = {k: statistics.median(s.get(k, 0.0) for s in steps) for k in keys}
    other = step - sum(v for k, v in med.items() if not k.startswith("  "))
    print(f"  {name}: {step:.3f} s/step  " + ", ".join(f"{k.strip()} {v:.3f}" for k, v in med.items())
          + f", other {other:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "medium", "both"], default="both")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up steps per run, not timed")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each library, alternating")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in both (0: each library's default)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per completion (exactly)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="where both libraries train (cuda: TRL without use_cpu, rlx with run.device=cuda)")
    ap.add_argument("--breakdown", action="store_true", help="also time the phases of each step (adds wrappers)")
    ap.add_argument("--at-defaults", action="store_true",
                    help="each library at its own recommended settings: TRL's defaults (bf16 autocast on CPU, "
                         "gradient checkpointing, fused AdamW), rlx's (run.precision=auto, default AdamW kernel); "
                         "the same work and learning settings")
    ap.add_argument("--rlx-set", action="append", metavar="KEY=VALUE",
                    help="an extra rlx override, repeatable (e.g. policy.sampler=transformers "
                         "policy.share_prompts=false: rlx without its fast paths)")
    ap.add_argument("--child", choices=["rlx", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        (child_rlx if a.child == "rlx" else child_trl)(a)
        return
    if a.steps < 1 or a.rounds < 1 or a.warmup < 0:
        ap.error("--steps and --rounds must be >= 1 and --warmup >= 0")

    sizes = ["tiny", "medium"] if a.size == "both" else [a.size]
    n = a.prompts * a.generations
    print(f"GRPO step: {a.prompts} prompts x {a.generations} completions = {n} completions of exactly {a.tokens} "
          f"new tokens; {a.warmup} warm-up + {a.steps} timed steps per run, {a.rounds} round(s), alternating; "
          f"torch threads: {a.threads or 'each library default'}; "
          f"{'each library at its own defaults' if a.at_defaults else 'matched fp32 settings'}", flush=True)
    summary = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            model, line = prepare_model(size, Path(folder))
            print(f"\n== {line}", flush=True)
            res: dict[str, list[dict[str, Any]]] = {"rlx": [], "trl": []}
            for r in range(a.rounds):
                for lib in ("rlx", "trl"):
                    out = run_child(lib, model, a)
                    res[lib].append(out)
                    s = statistics.median(out["step_s"])
                    print(f"round {r} {lib}: {s:.3f} s/step (median of {len(out['step_s'])}), "
                          f"{n * a.tokens / s:,.0f} tokens/s, interval {statistics.median(out['interval_s'] or [s]):.3f} s, "
                          f"CPU {statistics.median(out['cpu_s'] or [math.nan]):.3f} s/step, "
                          f"peak RSS {out['peak_rss_mib']:,.0f} MiB, {out['threads']} threads", flush=True)
                if r == 0:
                    print("settings (read back from each library's live objects):")
                    print_settings(res["rlx"][0], res["trl"][0])
            med = {lib: statistics.median(x for o in v for x in o["step_s"]) for lib, v in res.items()}
            rss = {lib: max(o["peak_rss_mib"] for o in v) for lib, v in res.items()}
            best = {lib: min(statistics.median(o["step_s"]) for o in v) for lib, v in res.items()}
            for lib in ("rlx", "trl"):
                print(f"{size} {lib}: median {med[lib]:.3f} s/step (best round {best[lib]:.3f}), "
                      f"{n * a.tokens / med[lib]:,.0f} generated tokens/s, peak RSS {rss[lib]:,.0f} MiB")
            ratio = med["rlx"] / med["trl"]
            cpu = {lib: statistics.median([x for o in v for x in o["cpu_s"]] or [math.nan]) for lib, v in res.items()}
            target = 0.5 if a.at_defaults else 0.8
            # each round ran rlx and TRL back to back: their ratio is free of the machine's
            # drift between rounds, which the pooled medians mix in
            per_round = [statistics.median(x["step_s"]) / statistics.median(y["step_s"])
                         for x, y in zip(res["rlx"], res["trl"])]
            print(f"{size}: ratio rlx/trl s/step {ratio:.3f} (target <= {target:.2f}; "
                  f"best rounds {best['rlx'] / best['trl']:.2f}; per round "
                  f"{', '.join(f'{x:.2f}' for x in per_round)}, their median {statistics.median(per_round):.2f}); "
                  f"process CPU s/step rlx {cpu['rlx']:.3f}, trl {cpu['trl']:.3f}, ratio {cpu['rlx'] / cpu['trl']:.2f}",
                  flush=True)
            if a.breakdown:
                print("per-phase medians (s), timed steps of every round:")
                for lib in ("rlx", "trl"):
                    merged = {"step_s": [x for o in res[lib] for x in o["step_s"]],
                              "phases": [p for o in res[lib] for p in o["phases"]]}
                    print_breakdown(lib, merged)
            summary.append((size, med, rss, ratio))
    if len(summary) > 1:
        print("\nsize     rlx s/step  trl s/step  rlx/trl  rlx RSS  trl RSS")
        for size, med, rss, ratio in summary:
            print(f"{size:<8} {med['rlx']:>10.3f}  {med['trl']:>10.3f}  {ratio:>7.2f}  {rss['rlx']:>5,.0f} MiB"
                  f"  {rss['trl']:>5,.0f} MiB")


if __name__ == "__main__":
    main()
