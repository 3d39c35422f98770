"""The one training loop: collect -> score -> objective -> optimizer, tracked in MLflow.

Every family plugs in here through the four interfaces; nothing below names an
algorithm, a reward or an environment.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlx import home as rlx_home
from rlx.config import Resolved, flatten
from rlx.errors import RlxError, RunKilled, UsageError


@dataclass
class RunResult:
    run_id: str
    mlflow_run_id: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    policy_dir: str = ""
    produces: str = "policy"  # what policy_dir holds: a policy or a reward model


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class _Progress:
    """A rich progress bar on a terminal; a plain line per evaluation otherwise."""

    def __init__(self, total: int, enabled: bool = True):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]step"), MofNCompleteColumn(), BarColumn(),
            TextColumn("reward {task.fields[reward]:.3f}"), TextColumn("kl {task.fields[kl]:.4f}"),
            TextColumn("eval {task.fields[acc]}"), TextColumn("{task.fields[speed]:.2f} s/step"),
            TimeRemainingColumn(), console=self.console, disable=not self.live)
        self.task = self.bar.add_task("train", total=total, reward=0.0, kl=0.0, acc="-", speed=0.0)

    def __enter__(self) -> "_Progress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def update(self, step: int, m: dict[str, float]) -> None:
        self.bar.update(self.task, completed=step, reward=m.get("reward/mean", 0.0), kl=m.get("kl/ref", 0.0),
                        speed=m.get("perf/step_s", 0.0))

    def eval(self, step: int, key: str, value: float) -> None:
        self.bar.update(self.task, acc=f"{value:.3f}")
        if self.enabled:  # printed above a live bar, so the evaluation history stays on screen
            self.console.print(f"step {step}: {key}={value:.3f}")


@dataclass
class Components:
    """What one run is made of, built from the resolved config."""

    env: Any
    policy: Any
    objective: Any
    rewards: list[Any]
    reference: Any
    specs: list[Any]
    rollout: Any = None  # control environments: the stepping state carried across batches
    stepper: Any = None  # one process in full precision: the optimizer step without torch's Python around it


def build(cfg: Resolved, registry: Any) -> Components:
    names = cfg.names
    specs = [registry.get("objective", names["objective"]), registry.get("environment", names["env"]),
             registry.get("policy", names["policy"])]
    reward_specs = [registry.get("reward", n) for n in cfg.rewards]
    env = specs[1].build(cfg.env, seed=cfg.run.seed)
    policy = specs[2].build(cfg.policy, env=env)
    objective = specs[0].build(cfg.objective, max_new_tokens=cfg.generation.max_new_tokens,
                               env_kind=getattr(env, "kind", "text"), env=env)
    objective.setup(policy)
    rewards = [spec.build(c, env=env, name=n) for spec, (n, c) in zip(reward_specs, cfg.rewards.items())]
    reference = policy.reference() if objective.needs_reference else None
    return Components(env, policy, objective, rewards, reference, specs + reward_specs)


def total_steps(cfg: Resolved, parts: Components) -> int:
    """``run.steps``, or for a control environment the steps that cover ``run.env_steps``."""
    per_step = parts.env.num_envs * parts.objective.rollout_length if parts.rollout is not None else 0
    if cfg.run.env_steps and per_step:
        return -(-cfg.run.env_steps // per_step)
    return cfg.run.steps


def run_tags(cfg: Resolved, parts: Components, run_id: str, command: str, device: str,
             processes: int = 1) -> dict[str, str]:
    names = cfg.names
    tags = {
        "rlx.run_id": run_id, "rlx.version": _version(), "rlx.git_commit": _git_commit(),
        "rlx.command": command or " ".join(sys.argv), "rlx.seed": str(cfg.run.seed),
        "rlx.objective": names["objective"], "rlx.env": names["env"], "rlx.policy": names["policy"],
        "rlx.rewards": names["reward"], "rlx.host": platform.node(), "rlx.device": device,
        "rlx.num_processes": str(processes),
        "mlflow.source.name": "rlx",
    }
    tags.update({f"rlx.plugin.{spec.plugin}": spec.version for spec in parts.specs})
    return tags


class NonFinite(RlxError):
    """A NaN or Inf reward, loss or gradient with ``run.on_nonfinite = "stop"``."""


def _agree(bad: bool) -> bool:
    """True on every rank when any rank saw a problem, so all ranks skip together."""
    from rlx.distributed import sum_over_ranks

    return sum_over_ranks(float(bad)) > 0


def train_step(parts: Components, cfg: Resolved, accelerator: Any, optimizer: Any, scheduler: Any,
               step: int) -> tuple[Any, dict[str, float], str]:
    """collect -> score -> objective -> optimizer, once. Returns the batch, its metrics
    (averaged over ranks) and, when the update was skipped, why."""
    import torch

    from rlx.distributed import mean_over_ranks
    from rlx.reward import combine
    from rlx.rollout import collect

    gen = cfg.generation
    t0 = time.perf_counter()
    if parts.rollout is not None:
        batch = parts.rollout.collect()
    else:
        batch = collect(parts.env, parts.policy, parts.objective, cfg.run.batch_size, max_new_tokens=gen.max_new_tokens,
                        temperature=gen.temperature, min_new_tokens=gen.min_new_tokens, seed=cfg.run.seed, step=step)
    t_gen = time.perf_counter() - t0
    metrics: dict[str, float] = {}
    problem = ""
    if parts.rewards:
        per_source = combine(parts.rewards, batch)
        total = batch["rewards"].sum(-1)
        metrics["reward/mean"] = float(total.mean())
        metrics["reward/std"] = float(total.std()) if len(total) > 1 else 0.0
        metrics.update({f"reward/{n}": float(v.float().nanmean()) for n, v in per_source.items()})
        silent = [n for n, v in per_source.items() if bool(torch.isnan(v.float()).all())]
        if not torch.isfinite(batch["rewards"]).all():
            problem = "a reward is Inf or NaN"
        elif silent:  # NaN means "not applicable"; for every sample it means a broken scorer
            problem = f"reward '{silent[0]}' returned NaN for every sample"
    skipped = _agree(bool(problem))
    if not skipped:
        metrics.update(parts.objective.prepare(batch, parts.policy, parts.reference))
    sums: dict[str, list[Any]] = {}
    model = parts.policy.model
    params = [p for p in model.parameters() if p.requires_grad]
    # one process in full precision: accelerate's and torch's wrappers only add per-call
    # overhead, which matters for control policies taking thousands of tiny steps
    direct = parts.stepper is not None
    raw_optimizer = parts.stepper.optimizer if direct else optimizer
    max_norm = cfg.optim.max_grad_norm or float("inf")
    for mb in ([] if skipped else parts.objective.minibatches(batch)):
        loss, m = parts.objective.loss(parts.policy, mb)
        if _agree(not math.isfinite(loss.item())):
            problem, skipped = "the loss is NaN or Inf", True
            break
        if direct:
            loss.backward()
            norm = parts.stepper.clip(max_norm)
        else:
            accelerator.backward(loss)
            norm = accelerator.clip_grad_norm_(params, max_norm)
        if _agree(not math.isfinite(float(norm))):
            optimizer.zero_grad(set_to_none=True)
            problem, skipped = "a gradient is NaN or Inf", True
            break
        m["optim/grad_norm"] = norm
        if direct:
            parts.stepper.step()
            for p in params:  # what zero_grad(set_to_none=True) does, without its 40 us of wrapping
                p.grad = None
        else:
            raw_optimizer.step()
            raw_optimizer.zero_grad(set_to_none=True)
        for k, v in m.items():  # objectives may return 0-d tensors: gathered here, read once below
            sums.setdefault(k, []).append(v)
    if not skipped:
        with warnings.catch_warnings():
            # an off-policy objective takes no optimizer step until its buffer fills; the
            # schedule still counts loop steps, so torch's ordering warning is noise here
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            scheduler.step()
        # each metric is the mean over the minibatches that reported it
        metrics.update({k: _mean(v) for k, v in sums.items()})
    dt = time.perf_counter() - t0
    metrics.update({"perf/step_s": dt, "perf/gen_s": t_gen, "optim/lr": scheduler.get_last_lr()[0]})
    if parts.rollout is not None:
        n = float(batch["mask"].numel())
        metrics.update({"perf/env_steps_per_s": n / dt, "env/steps": float(parts.rollout.env_steps)})
        metrics.update(parts.env.episode_stats())
    else:
        tokens = float(batch["mask"].sum())
        metrics.update({"perf/tokens_per_s": tokens / dt, "completion/length": tokens / max(len(batch), 1)})
    # ranks log the same keys; a skipped step has no loss metrics on any rank
    return batch, mean_over_ranks(metrics), (problem or "another process saw a non-finite value") if skipped else ""


def _mean(values: list[Any]) -> float:
    """Mean of floats or 0-d tensors, with one tensor op for the lot."""
    import torch

    if len(values) > 1 and all(isinstance(v, torch.Tensor) for v in values):
        return float(torch.stack(values).float().mean())
    return sum(float(v) for v in values) / len(values)


@dataclass
class Resume:
    """What ``rlx runs resume`` hands to ``train``: the run to continue, already claimed in
    the catalog by this process. It continues from the run's newest readable checkpoint."""

    run_id: str
    mlflow_run_id: str
    tracking_uri: str = ""


@dataclass
class _Run:
    """One run's state as the loop and its ending see it."""

    run_id: str = ""
    main: bool = True
    accelerator: Any = None
    parts: Any = None
    tracker: Any = None
    opened: bool = False  # a catalog row or MLflow run exists that must be ended
    status: str = "FINISHED"
    error: str = ""
    step: int = 0
    last: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    curve: list[list[Any]] = field(default_factory=list)
    run_dir: Path | None = None
    policy_dir: str = ""
    produces: str = "policy"
    interrupt: Any = None  # the RunInterrupted that ended it
    failure: BaseException | None = None  # the error that ended it


def train(cfg: Resolved, registry: Any, *, catalog: Any = None, command: str = "",
          tracking_uri: str | None = None, progress: bool = True, resume: Resume | None = None) -> RunResult:
    """Run one experiment end to end (or continue one from its checkpoint).

    However it ends, its status is recorded in the catalog and in MLflow (see
    ``rlx.status``): FINISHED, FAILED (raises ``RlxError``) or KILLED by a signal (raises
    ``RunKilled``; see ``rlx.interrupts``)."""
    from rlx.interrupts import RunInterrupted, Signals, signal_name

    # under `accelerate launch` the same signal may reach a rank more than once
    r = _Run(opened=resume is not None)
    with Signals(dedupe_repeats="LOCAL_RANK" in os.environ) as signals:
        try:
            _run(r, cfg, registry, signals, catalog=catalog, command=command, tracking_uri=tracking_uri,
                 progress=progress, resume=resume)
        except RunInterrupted as exc:
            r.status, r.interrupt = "KILLED", exc
            r.error = f"{exc.message} during step {r.step + 1}" if exc.hard else exc.message
        except KeyboardInterrupt:  # raised by other code than ours (a library's own handler)
            import signal

            r.status, r.interrupt = "KILLED", RunInterrupted(signal.SIGINT)
            r.error = f"interrupted ({signal_name(signal.SIGINT)}) during step {r.step + 1}"
        except RlxError as exc:
            r.status, r.error, r.failure = "FAILED", str(exc), exc
        except Exception as exc:
            r.status, r.error = "FAILED", f"{type(exc).__name__}: {exc}"
            r.failure = RlxError(f"run {r.run_id} failed: {r.error}; rerun with --debug for the traceback")
            r.failure.__cause__ = exc
        finally:
            problems = _finish(r, cfg, registry, catalog, signals, resume)
    for line in problems:
        _warn(line)
    if r.interrupt is not None:
        raise RunKilled(f"run {r.run_id} KILLED: {r.error}", r.interrupt.signum)
    if r.failure is not None:
        raise r.failure
    if r.status == "FAILED":
        raise RlxError(f"run {r.run_id} FAILED: {r.error}")
    if signals.received is not None:
        _warn(f"{signal_name(signals.received)} arrived while the run was ending; it FINISHED")
    return RunResult(r.run_id, r.tracker.run_id if r.tracker else "", r.status, r.last, r.policy_dir, r.produces)


def _run(r: _Run, cfg: Resolved, registry: Any, signals: Any, *, catalog: Any, command: str,
         tracking_uri: str | None, progress: bool, resume: Resume | None) -> None:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from rlx import checkpoint
    from rlx.interrupts import RunInterrupted, signal_name
    from rlx.rollout import evaluate

    run_cfg, gen = cfg.run, cfg.generation
    if resume is not None:  # known from the start: an early failure still names the run
        r.run_id = resume.run_id
    if run_cfg.threads:
        torch.set_num_threads(run_cfg.threads)
    if run_cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    accelerator = r.accelerator = Accelerator(cpu=run_cfg.device == "cpu")
    main = r.main = accelerator.is_main_process
    uri = (resume.tracking_uri if resume else "") or rlx_home.tracking_uri(tracking_uri)
    if main and (resume is None or resume.mlflow_run_id):
        from rlx.tracking import prewarm

        # MLflow's writer imports while the parts are built (a no-op where `rlx run` started it)
        prewarm(uri)
    # all ranks agree on the run id: the launcher passes it down, or rank 0 of a plain run makes it
    if resume is None:
        r.run_id = os.environ.get("RLX_RUN_ID") or _shared_run_id()
    run_id = r.run_id
    run_dir = r.run_dir = rlx_home.runs_dir() / run_id
    set_seed(run_cfg.seed)
    parts = r.parts = build(cfg, registry)
    env, policy = parts.env, parts.policy

    if getattr(env, "kind", "text") == "control":
        from rlx.rollout import ControlRollout

        # an objective with its own exploration (DQN's epsilon-greedy) acts instead of the policy
        explore = getattr(parts.objective, "act", None)
        parts.rollout = ControlRollout(env, policy, parts.objective.rollout_length,
                                       act=(lambda obs: explore(policy, obs)) if explore else None)
    steps = total_steps(cfg, parts)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                  **_adamw_kernel(cfg.optim.kernel, getattr(policy, "kind", "lm")))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(cfg.optim, steps))
    policy.model, optimizer, scheduler = accelerator.prepare(policy.model, optimizer, scheduler)
    if parts.reference is not None:
        parts.reference.model.to(accelerator.device)

    start = 1
    samples, last, curve = r.samples, r.last, r.curve
    if resume:
        path, state, skipped = checkpoint.load_newest(accelerator, run_dir / "checkpoints")
        if main:
            for line in skipped:
                _warn(f"{line}; resuming from {path.name} instead")
        env.load_state_dict(state["env"])
        parts.objective.load_state_dict(state["objective"])
        start = state["step"] + 1
        samples[:], curve[:] = state["samples"], state.get("curve", [])
        last.update(state["last"])
    r.step = start - 1
    if accelerator.num_processes == 1 and accelerator.mixed_precision == "no":
        from rlx.small_steps import SmallSteps

        # the fast clip concatenates every gradient: for tiny control networks only
        raw = getattr(optimizer, "optimizer", optimizer)
        parts.stepper = SmallSteps(raw, raw.param_groups[0]["params"], fast=getattr(policy, "kind", "lm") == "control")

    names = cfg.names
    run_name = run_cfg.name or f"{names['objective']}-{names['reward'] or 'none'}-{names['env']}-s{run_cfg.seed}"
    config_dict = cfg.to_dict()
    tags = run_tags(cfg, parts, run_id, command, str(accelerator.device), accelerator.num_processes)
    tracker = None
    if main:  # only rank 0 talks to MLflow and the catalog
        from rlx.tracking import Tracker

        if resume:
            if catalog is not None:
                catalog.mark_running(run_id)
            tracker = r.tracker = Tracker.reopen(uri, resume.mlflow_run_id, run_id)
        else:
            tracker = r.tracker = Tracker(uri, run_cfg.experiment, run_name, tags, flatten(config_dict),
                                          rlx_home.artifact_root(uri), rlx_run_id=run_id)
            r.opened = True
            if catalog is not None:
                from rlx.registry.catalog import RunRecord

                catalog.sync_plugins(registry.rows())
                catalog.add_run(RunRecord(id=run_id, name=run_name, objective=names["objective"],
                                          rewards=names["reward"], env=names["env"], policy=names["policy"],
                                          seed=run_cfg.seed, experiment=run_cfg.experiment,
                                          mlflow_run_id=tracker.run_id, tracking_uri=uri if tracker.enabled else "",
                                          config_json=json.dumps(config_dict), command=tags["rlx.command"],
                                          num_processes=accelerator.num_processes,
                                          accelerate_config=os.environ.get("RLX_ACCELERATE_CONFIG", "")))
            tracker.log_text(json.dumps(config_dict, indent=2), "config.json")
        registry.hook.rlx_run_start(run_id=run_id, config=config_dict)

    # held-out metrics: the environment's own, greedy generation on its held-out tasks, and
    # whatever the objective measures on held-out data (dpo: preference accuracy)
    produces = r.produces = getattr(parts.objective, "produces", "policy")
    gen_eval = (produces == "policy" and hasattr(env, "eval_tasks") and hasattr(env, "is_correct")
                and getattr(env, "generation_eval", True))
    objective_eval = getattr(parts.objective, "evaluate", None)
    can_eval = (hasattr(env, "evaluate") and produces == "policy") or gen_eval or objective_eval is not None
    skipped_total = int(last.get("nonfinite/skipped", 0))

    def run_eval(step: int) -> None:
        if main:  # evaluation has no collectives: rank 0 alone
            m: dict[str, float] = {}
            rows: list[dict[str, Any]] = []
            if hasattr(env, "evaluate") and produces == "policy":
                m = env.evaluate(policy)
            elif gen_eval:
                m, rows = evaluate(env, policy, max_new_tokens=gen.max_new_tokens, keep=run_cfg.samples_to_log)
            if objective_eval is not None:
                m.update(objective_eval(env, policy, parts.reference))
            if not m:
                return
            samples.extend({"step": step, "split": "eval", **row} for row in rows)
            curve.append([step, *next(iter(m.items()))])
            last.update(m)
            tracker.log_metrics(m, step)
            key = next(iter(m))
            bar.eval(step, key, m[key])

    saved_at = [0]

    def save_checkpoint(step: int) -> None:
        if tracker:
            tracker.flush()
        state = {"env": env.state_dict(), "objective": parts.objective.state_dict(), "samples": samples,
                 "last": last, "curve": curve}
        path = checkpoint.save(accelerator, run_dir / "checkpoints", step, state, run_cfg.keep_checkpoints)
        saved_at[0] = step
        if main and catalog is not None:
            catalog.update_run(run_id, checkpoint=str(path))

    def stop_if_signalled(step: int) -> None:
        if _agree(signals.received is not None):
            if saved_at[0] != step:
                save_checkpoint(step)
            name = signal_name(signals.received) if signals.received is not None else "a signal on another rank"
            raise RunInterrupted(signals.received or 2, f"interrupted by {name} after step {step}")

    step = start - 1
    with _Progress(steps, enabled=progress and main) as bar:
        bar.update(step, last)
        if can_eval and start == 1:
            run_eval(0)
        for step in range(start, steps + 1):
            if hasattr(parts.objective, "on_step"):
                parts.objective.on_step(step, steps)
            batch, metrics, problem = train_step(parts, cfg, accelerator, optimizer, scheduler, step)
            r.step = step
            if problem:
                if run_cfg.on_nonfinite == "stop":
                    raise NonFinite(f"non-finite value at step {step}: {problem}; set run.on_nonfinite=skip to "
                                    "skip such steps, or lower optim.lr")
                skipped_total += 1
            metrics["nonfinite/skipped"] = skipped_total
            if main and step % 10 == 1 and run_cfg.samples_to_log and "completion" in batch.meta:
                text = batch.meta["completion"][0]
                samples.append({"step": step, "split": "train", "prompt": batch.meta["prompt"][0],
                                "completion": text,
                                "correct": bool(env.is_correct(batch.meta["task"][0], text))
                                if hasattr(env, "is_correct") else None})
            last.update(metrics)
            if tracker:
                tracker.log_metrics(metrics, step)
            bar.update(step, metrics)
            stop = _agree(main and any(registry.hook.rlx_step_end(step=step, metrics=metrics)))
            if not stop and run_cfg.eval_every and step % run_cfg.eval_every == 0 and step != steps:
                run_eval(step)
            if run_cfg.checkpoint_every and step % run_cfg.checkpoint_every == 0 and step != steps:
                save_checkpoint(step)
            stop_if_signalled(step)
            if stop:
                break
        if step >= start:
            # the last step is checkpointed before the final evaluation and save: a run
            # stopped from here on resumes without training again
            save_checkpoint(step)
        if can_eval and (step >= start or start > steps):
            run_eval(step)
        stop_if_signalled(step)


def _finish(r: _Run, cfg: Resolved, registry: Any, catalog: Any, signals: Any, resume: Resume | None) -> list[str]:
    """Save the policy of a finished run, then record how the run ended in the catalog and
    in MLflow, whatever happened. Returns what could not be done, one line each."""
    from datetime import datetime, timezone

    from rlx.interrupts import RunInterrupted

    problems: list[str] = []
    parts, tracker, main = r.parts, r.tracker, r.main
    if r.status == "FINISHED" and parts is not None:
        r.accelerator.wait_for_everyone()
        bad = _nonfinite_parameters(parts.policy) if main else 0
        if bad:
            r.status = "FAILED"
            r.error = (f"the trained policy has NaN or Inf in {bad} parameter tensors "
                       f"({int(r.last.get('nonfinite/skipped', 0))} steps were skipped as non-finite); "
                       "lower optim.lr, or set run.on_nonfinite=stop to stop at the first one")
        saves = cfg.run.save_policy and r.produces != "nothing" and r.run_dir is not None
        if r.status == "FINISHED" and main:
            signals.phase = "save"
            try:
                _save_outputs(r, r.run_dir / "policy" if saves else None)
            except RunInterrupted as exc:
                r.status, r.interrupt, r.policy_dir = "KILLED", exc, ""
                r.error = f"{exc.message} while the final policy was being saved"
            except Exception as exc:
                r.status, r.policy_dir = "FAILED", ""
                r.error = f"saving the final policy failed: {type(exc).__name__}: {exc}"
    signals.phase = "record"  # from here on signals wait: both stores must get the status
    if r.status != "FINISHED" and r.run_dir is not None:
        r.error = f"{r.error}; {_resume_hint(r.run_id, r.run_dir)}"
    if not main:
        return problems
    if tracker:
        try:
            tracker.log_table(r.samples, "samples/generations.json")
            tracker.log_curve(r.curve, "learning_curve.png")
            if r.policy_dir:
                tracker.set_tags({"rlx.checkpoint": r.policy_dir})
        except Exception as exc:
            problems.append(f"could not log the samples table or learning curve to MLflow: {_line(exc)}")
    if catalog is not None and r.opened:
        try:
            catalog.update_run(r.run_id, status=r.status, metrics=r.last, policy_dir=r.policy_dir, error=r.error,
                               ended_at=datetime.now(timezone.utc))
        except Exception as exc:
            problems.append(f"the catalog could not record that run {r.run_id} {r.status}: {_line(exc)}")
    if tracker:
        try:
            lost = tracker.close(r.status, r.error)
            if lost:
                problems.append(lost)
        except Exception as exc:
            problems.append(f"MLflow could not record that run {r.run_id} {r.status}: {_line(exc)}")
    elif resume is not None and resume.mlflow_run_id:  # it stopped before it reopened its MLflow run
        try:
            from rlx.status import end_in_mlflow
            from rlx.tracking import _client

            end_in_mlflow(_client(resume.tracking_uri), resume.mlflow_run_id, r.status, r.error)
        except Exception as exc:
            problems.append(f"MLflow could not record that run {r.run_id} {r.status}: {_line(exc)}")
    if r.opened:
        try:
            registry.hook.rlx_run_end(run_id=r.run_id, status=r.status, metrics=dict(r.last))
        except Exception as exc:
            problems.append(f"an rlx_run_end hook raised {_line(exc)}")
    return problems


def _save_outputs(r: _Run, save_to: Path | None) -> None:
    """The final policy (or reward model) and the objective's artifacts, on disk and in MLflow."""
    import tempfile

    objective, tracker = r.parts.objective, r.tracker
    if save_to is not None:
        r.parts.policy.save(save_to)
        objective.save_alongside(save_to)
        r.policy_dir = str(save_to)
        if tracker and _dir_size(save_to) < 50 * 2**20:  # big checkpoints stay on disk only
            tracker.log_artifacts(save_to, "policy")
    if tracker:
        with tempfile.TemporaryDirectory() as folder:
            objective.artifacts(Path(folder))
            if any(Path(folder).iterdir()):
                tracker.log_artifacts(Path(folder), None)


def _nonfinite_parameters(policy: Any) -> int:
    """How many parameter tensors hold a NaN or Inf (a policy that must not be saved as trained)."""
    import torch

    with torch.no_grad():
        return sum(1 for p in policy.model.parameters() if not bool(torch.isfinite(p).all()))


def _resume_hint(run_id: str, run_dir: Path) -> str:
    from rlx import checkpoint

    newest = checkpoint.latest(run_dir / "checkpoints")
    if newest is None:
        return "it has no checkpoint to resume from; start it again"
    return f"`rlx runs resume {run_id}` continues it from step {int(newest.name[len(checkpoint.PREFIX):])}"


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _warn(line: str) -> None:
    try:
        sys.stderr.write(f"warning: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # the terminal is gone (SIGHUP)
        pass


def _adamw_kernel(kernel: str, policy_kind: str) -> dict[str, bool]:
    """AdamW's implementation. ``auto``: fused for control policies (thousands of steps on
    tiny networks, where per-tensor overhead dominates), single-tensor for LMs (the
    kernel the documented GRPO figures were measured with; the kernels round differently)."""
    if kernel == "auto":
        kernel = "fused" if policy_kind == "control" else "single"
    return {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[kernel]


def _lr_factor(optim: Any, steps: int) -> Any:
    """Multiplier of the base learning rate at scheduler step s: warm-up, then constant or
    linear decay to 0 at the last step."""
    warm = optim.warmup_steps

    def factor(s: int) -> float:
        if warm and s < warm:
            return (s + 1) / warm
        if optim.schedule == "linear":
            return max(0.0, 1.0 - (s - warm) / max(steps - warm, 1))
        return 1.0

    return factor


def _shared_run_id() -> str:
    """A new run id, the same on every rank (rank 0's) when started by a plain launcher."""
    ids = [uuid.uuid4().hex[:12]]
    from rlx.distributed import rank_world

    if rank_world()[1] > 1:
        import torch.distributed as dist

        dist.broadcast_object_list(ids, src=0)
    return ids[0]


def _version() -> str:
    from rlx import __version__

    return __version__
