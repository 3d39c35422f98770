"""rlx ``dpo`` against TRL's ``DPOTrainer`` on the same preference pairs, side by side.

Same char-level Llama as ``grpo_vs_trl.py`` (``tiny``: the shipped checkpoint; ``medium``:
hidden 512, 8 layers, 8 heads, intermediate 1536, built from config with seed 0), the same
pairs in the same order (drawn from rlx's ``preferences`` environment, seed 0: the gold
arithmetic solution against one with a mistake; TRL gets exactly those pairs as a
``datasets.Dataset`` of prompt / chosen / rejected, read in order), 32 pairs per optimizer
step (rlx dpo's ``run.batch_size``), no truncation (the sequences are a few dozen tokens;
both append EOS to each completion and add no BOS), sigmoid DPO with beta 0.1 (the default
of both) and no NLL term (rlx dpo's registered default ``nll_weight=1`` is RPO; 0 here), a
frozen reference model whose log-probs both compute at every step, and the same AdamW (lr
1e-4 constant, betas 0.9/0.999, eps 1e-8, no weight decay, clipping at 1.0). Needs the
``bench`` extra (trl).

    python benchmarks/dpo_vs_trl.py                                   # both sizes, 5 timed steps, 2 rounds
    python benchmarks/dpo_vs_trl.py --size tiny --rounds 3
    python benchmarks/dpo_vs_trl.py --size medium --steps 2 --rounds 1
    python benchmarks/dpo_vs_trl.py --size tiny --breakdown           # where each library's step goes
    python benchmarks/dpo_vs_trl.py --size medium --steps 2 --threads 1   # steadier on a shared machine
    python benchmarks/dpo_vs_trl.py --at-defaults                     # each library at its own defaults
    python benchmarks/dpo_vs_trl.py --size tiny --steps 1 --warmup 0 --rounds 1 --pairs 4   # smoke

Two modes. Matched (the default): both in fp32, no gradient checkpointing, the same
single-tensor AdamW: the same arithmetic, so the ratio is of the implementations.
``--at-defaults``: the same work and learning settings (model, pairs, batch, loss, beta,
lr, clipping) with each library's own recommended performance settings: TRL's DPOConfig
defaults (on CPU: bf16 autocast, gradient checkpointing, fused AdamW, ``max_length`` 1024,
which these pairs never reach) and rlx's (``run.precision=auto``, its default AdamW kernel).

Each library runs in its own subprocess per round (rlx, trl, rlx, trl, ...), so peak RSS
is each one's own. Warm-up steps are excluded. s/step is each library's own step: rlx's
``perf/step_s`` (encoding the step's pairs, the reference pass, the policy pass, backward,
clipping, AdamW) and, for TRL, the wall time from ``on_step_begin`` to ``on_step_end`` of a
TrainerCallback (reference and policy passes, backward, clipping, AdamW; TRL tokenizes the
whole dataset before training and collates in its dataloader, outside the step).
"interval" is the wall time between consecutive step ends, everything included; "CPU" the
process's CPU time per step (with two torch threads on a machine other work shares, the
threads' spin-waits inflate both wall and CPU time; ``--threads 1`` is steadier). The
``--breakdown`` phases are exclusive: TRL's reference pass runs inside its ``compute_loss``
and is counted once, as the reference forward. The settings table is read back from each
library's live objects (resolved config / DPOConfig, the AdamW actually built, the
reference model, the batches each fed its model); the pairs are compared token by token,
and each step's loss is printed for both (equal to float rounding in matched fp32). rlx
starts MLflow's writer process early, as ``rlx run`` does (``rlx.tracking.prewarm``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_vs_trl import RESULT, adamw_kernel, capture_adamw, finish, prepare_model, run_once_more_if_killed  # noqa: E402

# What both libraries are given (the rest of each is printed from its live objects).
LR = 1e-4
BETA = 0.1
LOSS_TYPE = "sigmoid"
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.0
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SEED = 0
PAIRS = 32
# One held-out pair and problem: rlx evaluates before and after training (outside the
# timed steps); TRL's pairs come from an environment with the same settings and seed.
ENV_SETTINGS = {"eval_size": 1}

PHASES = ("encode pairs", "reference forward", "policy forward + loss", "backward", "clip grad", "optimizer step")


# -- measurement helpers used inside the children ----------------------------------------------

class PhaseClock:
    """Exclusive wall time per phase (``--breakdown``): a wrapped call running inside another
    wrapped call is charged to its own phase only, so TRL's reference pass (called from its
    ``compute_loss``) is not counted twice."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self._nested: list[float] = []  # per open call: time spent in wrapped calls below it

    def wrap(self, owner: Any, name: str, key: str) -> None:
        fn = getattr(owner, name)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            clock._nested.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                inner = clock._nested.pop()
                clock.total[key] = clock.total.get(key, 0.0) + dt - inner
                if clock._nested:
                    clock._nested[-1] += dt

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        setattr(owner, name, timed)

    def install_common(self) -> None:
        """The phases both libraries reach through the same torch / accelerate calls."""
        import torch
        from accelerate import Accelerator

        self.wrap(torch.Tensor, "backward", "backward")
        self.wrap(Accelerator, "clip_grad_norm_", "clip grad")
        self.wrap(torch.optim.AdamW, "step", "optimizer step")

    def snapshot(self) -> dict[str, float]:
        return dict(self.total)


class Fed:
    """The batches a library fed its model, kept as tensor references during training (no
    copies or syncs inside the timed steps) and turned into token lists afterwards."""

    def __init__(self) -> None:
        # per step: prompt ids, prompt mask, completion ids, completion mask, tensor width
        self.batches: list[tuple[Any, Any, Any, Any, int]] = []

    def add(self, prompt_ids: Any, prompt_mask: Any, completion_ids: Any, completion_mask: Any, width: int) -> None:
        self.batches.append((prompt_ids, prompt_mask, completion_ids, completion_mask, width))

    def pairs(self) -> list[list[list[list[int]]]]:
        """Per step, per pair: [prompt tokens, chosen tokens, rejected tokens] (no padding)."""
        steps = []
        for p_ids, p_mask, c_ids, c_mask, _ in self.batches:
            prompts = [row[m.bool()].tolist() for row, m in zip(p_ids, p_mask)]
            completions = [row[m.bool()].tolist() for row, m in zip(c_ids, c_mask)]
            n = len(prompts) // 2  # rows: every chosen completion, then every rejected one
            steps.append([[prompts[i], completions[i], completions[n + i]] for i in range(n)])
        return steps

    def shapes(self) -> list[list[int]]:
        """[rows, width] of the token tensor each policy pass was given."""
        return [[int(p.shape[0]), width] for p, _, _, _, width in self.batches]


def child_threads(a: argparse.Namespace) -> None:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)


# -- rlx ----------------------------------------------------------------------------------

def rlx_sets(a: argparse.Namespace) -> list[str]:
    """The ``--set`` items of the rlx run: the matched work, and in matched mode fp32 with
    TRL's single-tensor AdamW."""
    sets = [f"policy.path={a.model}", f"run.batch_size={a.pairs}",
            f"objective.beta={BETA}", f"objective.loss_type={LOSS_TYPE}", "objective.divergence=reverse_kl",
            "objective.label_smoothing=0.0", "objective.nll_weight=0",
            f"optim.lr={LR}", f"optim.weight_decay={WEIGHT_DECAY}", f"optim.max_grad_norm={MAX_GRAD_NORM}",
            "optim.schedule=constant", "optim.warmup_steps=0",
            *([] if a.at_defaults else ["optim.kernel=single", "run.precision=fp32"]),
            "run.eval_every=0", "run.save_policy=false", "run.checkpoint_every=0", "run.samples_to_log=0",
            "run.device=cpu", *[f"env.{k}={v}" for k, v in ENV_SETTINGS.items()]]
    if a.threads:
        sets.append(f"run.threads={a.threads}")
    return sets + (a.rlx_set or [])


def child_rlx(a: argparse.Namespace) -> None:
    home = tempfile.mkdtemp(prefix="rlx-bench-")
    os.environ["RLX_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from rlx.tracking import prewarm

    prewarm()  # as `rlx run` does: MLflow's writer imports while torch loads, not while it trains
    import torch

    from rlx.hookspecs import hookimpl
    from rlx.plugins.dpo.objective import DPO
    from rlx.plugins.hf.policy import HFPolicy
    from rlx.plugins.text.kinds import PreferenceKind

    child_threads(a)
    adamw = capture_adamw()
    clock = PhaseClock() if a.breakdown else None
    fed = Fed()
    # shared_prompt_passes counts the training passes only (the held-out pairs' passes share
    # prompts whenever a pair is alone in its batch)
    live: dict[str, Any] = {"shared_prompt_passes": 0, "training": False, "packed": None}

    loss_fn, prepare_fn, shared_fn, packed_fn = DPO.loss, DPO.prepare, HFPolicy._forward_shared, HFPolicy._forward_packed

    def loss(self: Any, policy: Any, batch: Any) -> Any:  # what the policy pass is given
        width = batch["actions"].shape[1]
        prompt = batch["input_ids"][:, :-width] if width else batch["input_ids"]
        fed.add(prompt, batch["attention_mask"][:, :prompt.shape[1]], batch["actions"], batch["mask"],
                batch["input_ids"].shape[1])
        live.setdefault("first_pair", batch.meta["task"][0])
        live["training"] = True
        try:
            return loss_fn(self, policy, batch)
        finally:
            live["training"] = False

    def prepare(self: Any, batch: Any, policy: Any, reference: Any) -> Any:  # the live objective and models
        live.update(objective=self, policy=policy, reference=reference, training=True)
        try:
            return prepare_fn(self, batch, policy, reference)
        finally:
            live["training"] = False

    def forward_shared(self: Any, *args: Any, **kwargs: Any) -> Any:
        live["shared_prompt_passes"] += live["training"]
        return shared_fn(self, *args, **kwargs)

    def forward_packed(self: Any, ids: Any, attn: Any, T: int, *args: Any, **kwargs: Any) -> Any:
        out = packed_fn(self, ids, attn, T, *args, **kwargs)
        if out is not None and live["training"] and live["packed"] is None:  # the first training pass's layout
            from rlx.plugins.hf.packing import lay_out_once

            laid = lay_out_once(ids, attn, T, share_prompts=self.config.share_prompts)
            live["packed"] = (*laid.ids.shape, int(attn.sum()), self.config.share_prompts)
        return out

    DPO.loss, DPO.prepare = loss, prepare  # type: ignore[method-assign]
    HFPolicy._forward_shared = forward_shared  # type: ignore[method-assign]
    HFPolicy._forward_packed = forward_packed  # type: ignore[method-assign]
    if clock:
        from rlx.small_steps import SmallSteps

        clock.install_common()
        clock.wrap(PreferenceKind, "collect", "encode pairs")
        clock.wrap(DPO, "prepare", "reference forward")
        clock.wrap(DPO, "loss", "policy forward + loss")
        clock.wrap(SmallSteps, "clip", "clip grad")
        clock.wrap(SmallSteps, "step", "optimizer step")

    class Collector:
        def __init__(self) -> None:
            self.metrics: list[dict[str, float]] = []
            self.ends: list[float] = []
            self.cpu: list[float] = []
            self.marks: list[dict[str, float]] = []

        @hookimpl
        def rlx_run_start(self, run_id: str, config: dict) -> None:  # the baseline of the first interval
            self._mark()

        @hookimpl
        def rlx_step_end(self, step: int, metrics: dict) -> None:
            self._mark()
            self.metrics.append(dict(metrics))

        def _mark(self) -> None:
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())
            if clock:
                self.marks.append(clock.snapshot())

    total = a.warmup + a.steps
    try:
        from rlx.config import compose, resolve
        from rlx.loop import train
        from rlx.registry import get_registry

        reg = get_registry()
        col = Collector()
        reg.pm.register(col, name="dpo-vs-trl-collector")
        cfg = resolve(compose(None, {"objective": "dpo", "env": "preferences", "policy": "tiny",
                                     "steps": total, "seed": SEED}, rlx_sets(a)), reg)
        result = train(cfg, reg, progress=False)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if result.status != "FINISHED":
        raise SystemExit(f"rlx run ended {result.status}")
    d = cfg.to_dict()
    out = {
        "step_s": [m["perf/step_s"] for m in col.metrics[a.warmup:]],
        # ends[0] is the run's start: the first interval also holds rlx's evaluation before training
        "interval_s": [col.ends[i] - col.ends[i - 1] for i in range(a.warmup + 1, len(col.ends))],
        "cpu_s": [col.cpu[i] - col.cpu[i - 1] for i in range(a.warmup + 1, len(col.cpu))],
        "loss": [m["loss/dpo"] for m in col.metrics],
        "pairs": fed.pairs(),
        "shapes": fed.shapes(),
        "first_pair": [live["first_pair"][k] for k in ("prompt", "chosen", "rejected")],
        "threads": torch.get_num_threads(),
        "settings": rlx_settings(a, d, live, adamw, result),
    }
    if clock:
        out["phases"] = [{k: b.get(k, 0.0) - p.get(k, 0.0) for k in b}
                         for p, b in zip(col.marks[a.warmup:-1], col.marks[a.warmup + 1:])]
    finish(out)


def rlx_settings(a: argparse.Namespace, d: dict[str, Any], live: dict[str, Any], adamw: dict[str, Any],
                 result: Any) -> dict[str, Any]:
    """rlx's side of the table: the resolved config, the live policy, reference and objective."""
    import torch

    obj, opt = d["objective"], d["optim"]
    policy, reference, objective = live["policy"], live["reference"], live["objective"]
    ref_model = reference.model
    cached = len(objective._ref_cache)
    return {
        "model": f"{a.model} (policy tiny, policy.path)",
        "model dtype": dtype_name(policy.model),
        "reference model": f"separate: {ref_model is not policy.model}, {dtype_name(ref_model)}",
        "reference log-probs": "every step, no grad" if cached == 0 else f"cached ({cached} sequences)",
        "pairs per optimizer step": d["run"]["batch_size"],
        "loss": obj["loss_type"],
        "beta": obj["beta"],
        "f-divergence": obj["divergence"],
        "label smoothing": obj["label_smoothing"],
        "NLL term on chosen (RPO)": float(obj["nll_weight"]),
        "sequence log-prob": "mean over tokens" if obj["loss_type"] == "ipo" else "sum over completion tokens",
        "truncation": "none (rlx does not truncate)",
        "prompt pass": ("once per pair (shared)" if live["shared_prompt_passes"] or (live["packed"] or [0] * 4)[3]
                        else "once per row (chosen and rejected rows each)"),
        "padding": ("packed (policy.packing): {} x {} slots for {} real tokens".format(*live["packed"][:3])
                    if live["packed"] else "padded rows"),
        "optimizer": adamw.get("class"),
        "lr": adamw.get("lr"),
        "betas / eps": f"{adamw.get('betas')} / {adamw.get('eps')}",
        "weight decay": adamw.get("weight_decay"),
        "AdamW kernel": adamw.get("kernel"),
        "lr schedule": f"{opt['schedule']}, warm-up {opt['warmup_steps']}",
        "max grad norm": opt["max_grad_norm"],
        "gradient checkpointing": "no (not supported)",
        "mixed precision": getattr(result, "precision", "") or d["run"].get("precision"),
        "torch threads": torch.get_num_threads(),
        "seed": d["run"]["seed"],
        "steps (warm-up + timed)": f"{a.warmup} + {a.steps}",
    }


def dtype_name(model: Any) -> str:
    return str(next(model.parameters()).dtype).replace("torch.", "")


# -- TRL ------------------------------------------------------------------------------------

def draw_pairs(pairs: int, steps: int) -> list[dict[str, str]]:
    """The pairs rlx trains on: the same environment, settings and seed, ``pairs`` per step."""
    from rlx.plugins.preferences.env import PreferencesEnv

    env = PreferencesEnv(ENV_SETTINGS, seed=SEED)
    return [{k: t[k] for k in ("prompt", "chosen", "rejected")} for _ in range(steps) for t in env.sample(pairs)]


def trl_config(a: argparse.Namespace, out_dir: str) -> Any:
    """The DPOConfig: the matched work; TRL's own defaults for everything else with
    ``--at-defaults``, fp32 / no recomputation / single-tensor AdamW / no truncation otherwise."""
    from trl import DPOConfig

    matched = {} if a.at_defaults else {"bf16": False, "fp16": False, "gradient_checkpointing": False,
                                        "optim": "adamw_torch", "max_length": None}
    return DPOConfig(
        output_dir=out_dir, per_device_train_batch_size=a.pairs, gradient_accumulation_steps=1,
        beta=BETA, loss_type=[LOSS_TYPE], f_divergence_type="reverse_kl", label_smoothing=0.0,
        precompute_ref_log_probs=False, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1], adam_epsilon=ADAM_EPS, weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM, max_steps=a.warmup + a.steps, train_sampling_strategy="sequential",
        seed=SEED, use_cpu=True, report_to="none", logging_strategy="no", save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, **matched)


def child_trl(a: argparse.Namespace) -> None:
    child_threads(a)
    import torch

    adamw = capture_adamw()
    clock = PhaseClock() if a.breakdown else None
    import datasets
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOTrainer

    datasets.disable_progress_bars()
    fed = Fed()
    losses: list[Any] = []
    compute_loss = DPOTrainer.compute_loss

    def recorded(self: Any, model: Any, inputs: dict, *args: Any, **kwargs: Any) -> Any:  # what the passes are given
        loss = compute_loss(self, model, inputs, *args, **kwargs)
        if model.training:
            ids, comp = inputs["input_ids"], inputs["completion_mask"]
            fed.add(ids, inputs["attention_mask"] * (1 - comp), ids, comp, ids.shape[1])
            losses.append((loss[0] if isinstance(loss, tuple) else loss).detach())
        return loss

    DPOTrainer.compute_loss = recorded  # type: ignore[method-assign]
    if clock:
        clock.install_common()
        clock.wrap(DPOTrainer, "compute_loss", "policy forward + loss")

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.step_s: list[float] = []
            self.ends: list[float] = []
            self.cpu: list[float] = []
            self.marks: list[dict[str, float]] = []
            self.t0 = self.c0 = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
            if clock:
                self.marks.append(clock.snapshot())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            t = time.perf_counter()
            self.step_s.append(t - self.t0)
            self.ends.append(t)
            self.cpu.append(time.process_time() - self.c0)
            if clock:
                self.marks.append(clock.snapshot())

    data = datasets.Dataset.from_list(draw_pairs(a.pairs, a.warmup + a.steps))
    with tempfile.TemporaryDirectory() as out_dir:
        args = trl_config(a, out_dir)
        timer = Timer()
        trainer = DPOTrainer(model=a.model, args=args, train_dataset=data,
                             processing_class=AutoTokenizer.from_pretrained(a.model), callbacks=[timer])
        if clock:  # TRL's reference pass: the frozen model's own (fused-head) forward
            clock.wrap(trainer.ref_model, "forward", "reference forward")
        trainer.train()
    pairs = fed.pairs()
    out = {
        "step_s": timer.step_s[a.warmup:],
        "interval_s": [t1 - t0 for t0, t1 in zip(timer.ends[max(a.warmup - 1, 0):], timer.ends[max(a.warmup, 1):])],
        "cpu_s": timer.cpu[a.warmup:],
        "loss": [float(x) for x in losses],
        "pairs": pairs,
        "shapes": fed.shapes(),
        "threads": torch.get_num_threads(),
        "settings": trl_settings(a, trainer, adamw),
    }
    if clock:
        # marks alternate begin, end: keep the [begin, end] pairs of the timed steps
        spans = list(zip(timer.marks[0::2], timer.marks[1::2]))[a.warmup:]
        out["phases"] = [{k: e.get(k, 0.0) - b.get(k, 0.0) for k in e} for b, e in spans]
    finish(out)


def trl_settings(a: argparse.Namespace, trainer: Any, adamw: dict[str, Any]) -> dict[str, Any]:
    """TRL's side of the table: the DPOConfig the trainer holds, its models and optimizer."""
    import torch

    args, model, ref = trainer.args, trainer.model, trainer.ref_model
    pg = trainer.optimizer.param_groups[0]
    weights = dict(zip(args.loss_type, args.loss_weights or [1.0] * len(args.loss_type)))
    schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    return {
        "model": f"{a.model} (DPOTrainer(model=path))",
        "model dtype": dtype_name(model),
        "reference model": f"separate: {ref is not None and ref is not model}, {dtype_name(ref)}",
        "reference log-probs": ("precomputed" if args.precompute_ref_log_probs else "every step, no grad"),
        "pairs per optimizer step": args.per_device_train_batch_size * args.gradient_accumulation_steps,
        "loss": ",".join(t for t in args.loss_type if t != "sft"),
        "beta": args.beta,
        "f-divergence": args.f_divergence_type,
        "label smoothing": args.label_smoothing,
        "NLL term on chosen (RPO)": float(weights.get("sft", 0.0)),
        "sequence log-prob": "sum over completion tokens" if args.ld_alpha is None else f"LD (alpha {args.ld_alpha})",
        "truncation": "none (max_length None)" if args.max_length is None
                      else f"max_length {args.max_length}, {args.truncation_mode}",
        "prompt pass": "once per row (chosen and rejected rows each)",
        "padding": "padding-free (padding_free)" if getattr(args, "padding_free", False) else "padded rows",
        "optimizer": adamw.get("class"),
        "lr": pg.get("initial_lr", pg["lr"]),
        "betas / eps": f"{tuple(pg['betas'])} / {pg['eps']}",
        "weight decay": pg["weight_decay"],
        "AdamW kernel": adamw_kernel(trainer.optimizer),
        "lr schedule": f"{schedule}, warm-up {args.warmup_steps}",
        "max grad norm": args.max_grad_norm,
        "gradient checkpointing": args.gradient_checkpointing,
        "mixed precision": f"bf16 {args.bf16}, fp16 {args.fp16}",
        "torch threads": torch.get_num_threads(),
        "seed": args.seed,
        "steps (warm-up + timed)": f"{a.warmup} + {a.steps}",
    }


# -- the parent -----------------------------------------------------------------------------

def run_child(lib: str, model: Path, a: argparse.Namespace) -> dict[str, Any]:
    import json

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", lib, "--model", str(model),
           "--steps", str(a.steps), "--warmup", str(a.warmup), "--pairs", str(a.pairs), "--threads", str(a.threads)]
    cmd += ["--breakdown"] * a.breakdown + ["--at-defaults"] * a.at_defaults
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


def length_rows(res: dict[str, Any]) -> dict[str, str]:
    """The sequence lengths a library actually fed its model (from its batches, padding removed)."""
    pairs = [p for step in res["pairs"] for p in step]
    prompts = [len(p[0]) for p in pairs]
    completions = [len(c) for p in pairs for c in p[1:]]
    sequences = [len(p[0]) + len(c) for p in pairs for c in p[1:]]
    rows, width = res["shapes"][0] if res["shapes"] else (0, 0)
    return {
        "prompt tokens (min / max)": f"{min(prompts)} / {max(prompts)}",
        "completion tokens with EOS (min / max)": f"{min(completions)} / {max(completions)}",
        "sequence tokens (min / max)": f"{min(sequences)} / {max(sequences)}",
        "real tokens per step (mean)": f"{sum(sequences) / len(res['pairs']):.1f}",
        "first batch tensor (rows x width)": f"{rows} x {width}",
    }


def print_settings(rlx: dict[str, Any], trl: dict[str, Any]) -> None:
    sides = [{**r["settings"], **length_rows(r)} for r in (rlx, trl)]
    keys = list(sides[0])
    w = max(len(k) for k in keys) + 2
    wr = max(32, max(len(str(v)) for v in sides[0].values()) + 2)
    print(f"  {'setting':<{w}}{'rlx':<{wr}}trl")
    for k in keys:
        print(f"  {k:<{w}}{str(sides[0][k]):<{wr}}{sides[1].get(k, '-')}")
    print("  " + compare_pairs(rlx, trl))
    print("  " + compare_losses(rlx, trl))


def compare_pairs(rlx: dict[str, Any], trl: dict[str, Any]) -> str:
    a, b = rlx["pairs"], trl["pairs"]
    shape = f"{len(a)} steps x {len(a[0]) if a else 0} pairs"
    if a == b:
        p, c, r = rlx["first_pair"]
        return (f"pairs: the same in both, in the same order ({shape}, compared token by token; first: "
                f"prompt {p!r}, chosen {c!r}, rejected {r!r})")
    where = next(((s, i) for s, (x, y) in enumerate(zip(a, b)) for i, (u, v) in enumerate(zip(x, y)) if u != v),
                 None)
    detail = f"first difference at step {where[0]}, pair {where[1]}" if where else (
        f"rlx {shape}, trl {len(b)} steps x {len(b[0]) if b else 0} pairs")
    return f"pairs: DIFFERENT ({detail})"


def compare_losses(rlx: dict[str, Any], trl: dict[str, Any]) -> str:
    """Each step's DPO loss in both: the same pairs, model and update give the same values
    (to float rounding in matched fp32); the first is ln 2 in both (policy = reference)."""
    a, b = rlx["loss"], trl["loss"]
    gap = max((abs(x - y) for x, y in zip(a, b)), default=math.nan)
    show = ", ".join
    return (f"loss per step: rlx {show(f'{x:.4f}' for x in a[:6])}; trl {show(f'{x:.4f}' for x in b[:6])}; "
            f"largest difference {gap:.1e} (ln 2 = {math.log(2):.4f})")


def print_breakdown(name: str, runs: list[dict[str, Any]]) -> None:
    steps = [p for o in runs for p in o["phases"]]
    step = statistics.median(x for o in runs for x in o["step_s"])
    med = {k: statistics.median(s.get(k, 0.0) for s in steps) for k in PHASES if any(k in s for s in steps)}
    other = step - sum(med.values())
    print(f"  {name}: {step:.3f} s/step  " + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
          + f", other {other:.3f}")


def report_round(r: int, lib: str, out: dict[str, Any], pairs: int) -> None:
    s = statistics.median(out["step_s"])
    print(f"round {r} {lib}: {s:.3f} s/step (median of {len(out['step_s'])}), {pairs / s:,.1f} pairs/s, "
          f"interval {statistics.median(out['interval_s'] or [s]):.3f} s, "
          f"CPU {statistics.median(out['cpu_s'] or [math.nan]):.3f} s/step, "
          f"peak RSS {out['peak_rss_mib']:,.0f} MiB, {out['threads']} threads", flush=True)


def run_size(size: str, folder: Path, a: argparse.Namespace) -> tuple[dict[str, float], dict[str, float], float]:
    model, line = prepare_model(size, folder)
    print(f"\n== {line}", flush=True)
    res: dict[str, list[dict[str, Any]]] = {"rlx": [], "trl": []}
    for r in range(a.rounds):
        for lib in ("rlx", "trl"):
            out = run_child(lib, model, a)
            res[lib].append(out)
            report_round(r, lib, out, a.pairs)
        if r == 0:
            print("settings (read back from each library's live objects):")
            print_settings(res["rlx"][0], res["trl"][0])
    med = {lib: statistics.median(x for o in v for x in o["step_s"]) for lib, v in res.items()}
    rss = {lib: max(o["peak_rss_mib"] for o in v) for lib, v in res.items()}
    per_round = [statistics.median(x["step_s"]) / statistics.median(y["step_s"]) for x, y in zip(res["rlx"], res["trl"])]
    for lib in ("rlx", "trl"):
        print(f"{size} {lib}: median {med[lib]:.3f} s/step, {a.pairs / med[lib]:,.1f} pairs/s, "
              f"peak RSS {rss[lib]:,.0f} MiB")
    ratio = med["rlx"] / med["trl"]
    cpu = {lib: statistics.median([x for o in v for x in o["cpu_s"]] or [math.nan]) for lib, v in res.items()}
    # each round ran rlx and TRL back to back: their ratio is free of the machine's drift
    # between rounds, which the pooled medians above mix in
    print(f"{size}: ratio rlx/trl s/step {ratio:.2f} (target <= 0.50; per round "
          f"{', '.join(f'{x:.2f}' for x in per_round)}, their median {statistics.median(per_round):.2f}); "
          f"process CPU s/step rlx {cpu['rlx']:.3f}, "
          f"trl {cpu['trl']:.3f}, ratio {cpu['rlx'] / cpu['trl']:.2f}", flush=True)
    if a.breakdown:
        print("per-phase medians (s), timed steps of every round (exclusive: nested phases not counted twice):")
        for lib in ("rlx", "trl"):
            print_breakdown(lib, res[lib])
    return med, rss, ratio


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "medium", "both"], default="both")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up steps per run, not timed")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each library, alternating")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in both (0: each library's default)")
    ap.add_argument("--pairs", type=int, default=PAIRS, help="preference pairs per optimizer step")
    ap.add_argument("--breakdown", action="store_true", help="also time the phases of each step (adds wrappers)")
    ap.add_argument("--at-defaults", action="store_true",
                    help="each library at its own recommended settings: TRL's DPOConfig defaults (bf16 autocast "
                         "on CPU, gradient checkpointing, fused AdamW), rlx's (run.precision=auto, default AdamW "
                         "kernel); the same work and learning settings")
    ap.add_argument("--rlx-set", action="append", metavar="KEY=VALUE", help="an extra rlx override, repeatable")
    ap.add_argument("--child", choices=["rlx", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.steps < 1 or a.rounds < 1 or a.pairs < 1:
        ap.error("--steps, --rounds and --pairs must be >= 1")
    if a.warmup < 0 or a.threads < 0:
        ap.error("--warmup and --threads must be >= 0")
    return a


def main() -> None:
    a = parse()
    if a.child:
        (child_rlx if a.child == "rlx" else child_trl)(a)
        return
    sizes = ["tiny", "medium"] if a.size == "both" else [a.size]
    print(f"DPO step: {a.pairs} pairs (chosen + rejected: {2 * a.pairs} sequences) per optimizer step, sigmoid loss, "
          f"beta {BETA}, reference model; {a.warmup} warm-up + {a.steps} timed steps per run, {a.rounds} round(s), "
          f"alternating; torch threads: {a.threads or 'each library default'}; "
          f"{'each library at its own defaults' if a.at_defaults else 'matched fp32 settings'}", flush=True)
    summary = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            summary.append((size, *run_size(size, Path(folder), a)))
    if len(summary) > 1:
        print("\nsize     rlx s/step  trl s/step  rlx/trl  rlx RSS  trl RSS")
        for size, med, rss, ratio in summary:
            print(f"{size:<8} {med['rlx']:>10.3f}  {med['trl']:>10.3f}  {ratio:>7.2f}  {rss['rlx']:>5,.0f} MiB"
                  f"  {rss['trl']:>5,.0f} MiB")


if __name__ == "__main__":
    main()
