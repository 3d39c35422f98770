"""The one training loop: collect -> score -> objective -> optimizer, tracked in MLflow.

Every family plugs in here through the four interfaces; nothing below names an
algorithm, a reward or an environment.
"""

from __future__ import annotations

import contextlib
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
    headline: list[str] = field(default_factory=list)  # the metrics to show, as the registrations say
    stopped_by: str = ""  # the plugin that stopped the run early, if one did
    stopped_at_step: int = 0
    steps: int = 0  # the steps it was set to train
    mlflow_experiment_id: str = ""
    precision: str = ""  # what run.precision resolved to (fp32, bf16, fp16) and why: "bf16 (auto: ...)"


def _git(args: list[str], cwd: Path) -> str:
    """git's answer in ``cwd``, or "" (no git, not a work tree, any failure)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # a status must not take the index lock
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def source_tags(cwd: Path) -> dict[str, str]:
    """Where the run came from: the researcher's own project (the git work tree the run
    started in: MLflow's ``mlflow.source.git.*`` tags, which its UI shows as the run's
    source and commit) and rlx's own commit when rlx runs from a git checkout."""
    tags: dict[str, str] = {}
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["rlx.project_commit"] = commit
        tags["rlx.project_dirty"] = "true" if _git(["status", "--porcelain", "--untracked-files=no"], cwd) else "false"
        branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
        if branch and branch != "HEAD":
            tags["mlflow.source.git.branch"] = branch
        remote = _git(["config", "--get", "remote.origin.url"], cwd)
        if remote:
            tags["mlflow.source.git.repoURL"] = remote
    own = _git(["rev-parse", "HEAD"], Path(__file__).resolve().parent)
    if own:
        tags["rlx.git_commit"] = own
    return tags


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else ""


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
    kind: Any  # the environment kind: collects batches and evaluates
    specs: list[Any]  # registrations: objective, environment, policy, kind, then rewards
    stepper: Any = None  # one process in full precision: the optimizer step without torch's Python around it

    @property
    def produces(self) -> str:
        """What the run leaves behind, as the objective's registration says."""
        return self.specs[0].meta["produces"]


def build(cfg: Resolved, registry: Any) -> Components:
    from rlx.kind import KindContext

    names = cfg.names
    objective_spec, env_spec = registry.get("objective", names["objective"]), registry.get("environment", names["env"])
    policy_spec, kind_spec = registry.get("policy", names["policy"]), registry.get("kind", names["kind"])
    reward_specs = [registry.get("reward", n) for n in cfg.rewards]
    env = env_spec.build(cfg.env, seed=cfg.run.seed)
    policy = policy_spec.build(cfg.policy, env=env)
    objective = objective_spec.build(cfg.objective, max_new_tokens=cfg.generation.max_new_tokens,
                                     env_kind=kind_spec.name, env=env)
    objective.setup(policy)
    rewards = [spec.build(c, env=env, name=n) for spec, (n, c) in zip(reward_specs, cfg.rewards.items())]
    reference = policy.reference() if objective.needs_reference else None
    kind = kind_spec.build(kind_spec.config(), context=KindContext(
        env, policy, objective, cfg, data=objective_spec.meta["data"], seed=cfg.run.seed))
    return Components(env, policy, objective, rewards, reference, kind,
                      [objective_spec, env_spec, policy_spec, kind_spec] + reward_specs)


def run_tags(cfg: Resolved, parts: Components, run_id: str, command: str, device: str,
             processes: int = 1) -> dict[str, str]:
    names = cfg.names
    tags = {
        "rlx.run_id": run_id, "rlx.version": _version(),
        "rlx.command": command or " ".join(sys.argv), "rlx.seed": str(cfg.run.seed),
        "rlx.objective": names["objective"], "rlx.env": names["env"], "rlx.policy": names["policy"],
        "rlx.kind": names["kind"], "rlx.rewards": names["reward"], "rlx.host": platform.node(), "rlx.device": device,
        "rlx.num_processes": str(processes),
        "mlflow.source.name": "rlx", "mlflow.source.type": "LOCAL", "mlflow.user": _user(),
        **source_tags(Path.cwd()),
    }
    tags.update({f"rlx.plugin.{spec.plugin}": spec.version for spec in parts.specs})
    tags["rlx.headline"] = ",".join(headline(parts.specs[0], parts.specs[3]))
    return tags


def headline(objective_spec: Any, kind_spec: Any) -> list[str]:
    """The metrics a run's end line and ``rlx runs`` show: the kind's evaluation, then
    what the objective's registration names."""
    return list(dict.fromkeys([*kind_spec.meta["headline"], *objective_spec.meta["headline"]]))


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

    t0 = time.perf_counter()
    # sampling and the no-grad passes in run.precision as well
    autocast = in_precision(accelerator)
    with autocast():
        batch = parts.kind.collect(step)
    t_gen = time.perf_counter() - t0
    metrics: dict[str, float] = {}
    problem = ""
    if parts.rewards:
        per_source = combine(parts.rewards, batch)
        total = batch["rewards"].sum(-1)
        metrics["reward/mean"] = float(total.mean())
        metrics["reward/std"] = float(total.std()) if len(total) > 1 else 0.0
        metrics.update({f"reward/{n}": float(v.float().nanmean()) for n, v in per_source.items()})
        for src in parts.rewards:
            metrics.update({f"reward/{src.name}/{k}": float(v) for k, v in src.metrics().items()})
        silent = [n for n, v in per_source.items() if bool(torch.isnan(v.float()).all())]
        if not torch.isfinite(batch["rewards"]).all():
            problem = "a reward is Inf or NaN"
        elif silent:  # NaN means "not applicable"; for every sample it means a broken scorer
            problem = f"reward '{silent[0]}' returned NaN for every sample"
    skipped = _agree(bool(problem))
    if not skipped:
        with autocast():
            metrics.update(parts.objective.prepare(batch, parts.policy, parts.reference))
    sums: dict[str, list[Any]] = {}
    model = parts.policy.model
    params = [p for p in model.parameters() if p.requires_grad]
    # one process in full precision: accelerate's and torch's wrappers only add per-call
    # overhead, which matters for control policies taking thousands of tiny steps
    direct = parts.stepper is not None
    raw_optimizer = parts.stepper.optimizer if direct else optimizer
    max_norm = cfg.optim.max_grad_norm or float("inf")
    # gradients written by the objective itself: nothing may stand between loss and gradient
    by_hand = direct and accelerator.mixed_precision == "no"
    for mb in ([] if skipped else parts.objective.minibatches(batch)):
        written = parts.objective.gradients(parts.policy, mb) if by_hand else None
        if written is None:
            with autocast():  # around the whole loss: passes that go around accelerate's wrapper included
                loss, m = parts.objective.loss(parts.policy, mb)
        else:
            loss, m = written
        if _agree(not math.isfinite(loss.item())):
            for p in params:  # written gradients of a non-finite loss are not kept
                p.grad = None
            problem, skipped = "the loss is NaN or Inf", True
            break
        if direct:
            if written is None:
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
    metrics.update({"perf/step_s": dt, "perf/gen_s": t_gen})
    if sums:  # an optimizer step was taken: objectives that train nothing log no optimizer metrics
        metrics["optim/lr"] = scheduler.get_last_lr()[0]
    metrics.update(parts.kind.step_metrics(batch, dt))
    # ranks log the same keys; a skipped step has no loss metrics on any rank
    return batch, mean_over_ranks(metrics), (problem or "another process saw a non-finite value") if skipped else ""


def in_precision(accelerator: Any) -> Any:
    """A factory of the context that computes in run.precision: accelerate's autocast in
    bf16/fp16; in fp32 a plain no-op, without accelerate's per-call set-up (a control run
    enters it thousands of times a second)."""
    return contextlib.nullcontext if accelerator.mixed_precision == "no" else accelerator.autocast


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
    """One run's state, as its parts below and its ending see it."""

    cfg: Resolved
    registry: Any
    catalog: Any = None
    signals: Any = None
    run_id: str = ""
    uri: str = ""  # the MLflow tracking URI
    main: bool = True
    accelerator: Any = None
    precision: Any = None  # rlx.precision.Precision: what run.precision resolved to
    parts: Any = None
    optimizer: Any = None
    scheduler: Any = None
    tracker: Any = None
    bar: Any = None
    opened: bool = False  # a catalog row or MLflow run exists that must be ended
    status: str = "FINISHED"
    error: str = ""
    start: int = 1  # the first step this process trains (after a resume: the one after the checkpoint)
    steps: int = 0
    step: int = 0
    saved_at: int = 0  # the step of the newest checkpoint this process wrote
    skipped: int = 0  # steps skipped as non-finite, over the whole run
    skip_reasons: set[str] = field(default_factory=set)  # the reasons already warned about
    zero_steps: int = 0  # leading steps whose gradient was exactly 0 (-1 once one was not)
    stopped_by: str = ""  # the plugin whose rlx_step_end hook stopped the run early
    last: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    curve: list[list[Any]] = field(default_factory=list)
    run_dir: Path | None = None
    policy_dir: str = ""
    produces: str = "policy"
    member: Any = None  # the sweep this run belongs to (rlx.sweep_member), if any
    heartbeat: Any = None  # progress.json for the sweep's controller
    interrupt: Any = None  # the RunInterrupted that ended it
    failure: BaseException | None = None  # the error that ended it


# leading steps with an exactly-zero gradient before the loop says so: one such step is
# normal (a batch whose groups all scored alike), several in a row from the start are not
ZERO_GRADIENT_STEPS = 3


def train(cfg: Resolved, registry: Any, *, catalog: Any = None, command: str = "",
          tracking_uri: str | None = None, progress: bool = True, resume: Resume | None = None) -> RunResult:
    """Run one experiment end to end (or continue one from its checkpoint): set up, train
    step by step (evaluating and checkpointing on schedule), finish.

    However it ends, its status is recorded in the catalog and in MLflow (see
    ``rlx.status``): FINISHED, FAILED (raises ``RlxError``) or KILLED by a signal (raises
    ``RunKilled``; see ``rlx.interrupts``)."""
    from rlx.interrupts import RunInterrupted, Signals, signal_name
    from rlx.precision import denormals_flushed

    r = _Run(cfg, registry, catalog, opened=resume is not None)
    # under `accelerate launch` the same signal may reach a rank more than once; so may a
    # run a sweep supervises: its parent's death (PR_SET_PDEATHSIG) can signal it again
    # when a subreaper above it exits, which would cut the checkpointing step short
    with Signals(dedupe_repeats="LOCAL_RANK" in os.environ or "RLX_SWEEP_ID" in os.environ) as r.signals, \
            denormals_flushed(cfg.run.flush_denormal):
        try:
            _set_up(r, tracking_uri, resume)
            _open_tracking(r, command, resume)
            with _Progress(r.steps, enabled=progress and r.main) as r.bar:
                _train_steps(r)
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
            problems = _finish(r, resume)
    for line in problems:
        _warn(line)
    if r.interrupt is not None:
        raise RunKilled(f"run {r.run_id} KILLED: {r.error}", r.interrupt.signum)
    if r.failure is not None:
        raise r.failure
    if r.status == "FAILED":
        raise RlxError(f"run {r.run_id} FAILED: {r.error}")
    if r.signals.received is not None:
        _warn(f"{signal_name(r.signals.received)} arrived while the run was ending; it FINISHED")
    return RunResult(r.run_id, r.tracker.run_id if r.tracker else "", r.status, r.last, r.policy_dir, r.produces,
                     headline(r.parts.specs[0], r.parts.specs[3]), r.stopped_by,
                     r.step if r.stopped_by else 0, r.steps, r.tracker.experiment_id if r.tracker else "",
                     f"{r.precision.name} ({r.precision.why})" if r.precision else "")


def _set_up(r: _Run, tracking_uri: str | None, resume: Resume | None) -> None:
    """The accelerator, the components, the optimizer and, for a resume, the state of the
    newest checkpoint."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env, set_seed

    from rlx import checkpoint
    from rlx.precision import choose, slow_bf16_warning

    cfg, run_cfg = r.cfg, r.cfg.run
    if resume is not None:  # known from the start: an early failure still names the run
        r.run_id = resume.run_id
    if run_cfg.threads:
        torch.set_num_threads(run_cfg.threads)
    if run_cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    # the process state first (ranks, device); the Accelerator once the policy is built, as
    # run.precision=auto weighs its size
    # ACCELERATE_USE_CPU (set by `accelerate launch` on CPU ranks) is read by the Accelerator,
    # not by PartialState: without it here the ranks of a CPU launch would each run alone
    state = PartialState(cpu=run_cfg.device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU"))
    r.main = state.is_main_process
    r.uri = (resume.tracking_uri if resume else "") or rlx_home.tracking_uri(tracking_uri)
    if r.main and (resume is None or resume.mlflow_run_id):
        from rlx.tracking import prewarm

        # MLflow's writer imports while the parts are built (a no-op where `rlx run` started it)
        prewarm(r.uri)
    # all ranks agree on the run id: the launcher passes it down, or rank 0 of a plain run makes it
    if resume is None:
        r.run_id = os.environ.get("RLX_RUN_ID") or _shared_run_id()
    r.run_dir = rlx_home.runs_dir() / r.run_id
    set_seed(run_cfg.seed)
    parts = r.parts = build(cfg, r.registry)
    parameters = sum(p.numel() for p in parts.policy.model.parameters())
    r.precision = choose(run_cfg.precision, state.device.type, parameters)
    warning = slow_bf16_warning(r.precision, state.device.type)
    if warning and r.main:
        _warn(warning)
    accelerator = r.accelerator = _accelerator(run_cfg.device == "cpu", r.precision)
    r.produces = parts.produces
    r.steps = parts.kind.total_steps()
    small = parts.kind.small_steps
    r.optimizer = torch.optim.AdamW(parts.policy.model.parameters(), lr=cfg.optim.lr,
                                    weight_decay=cfg.optim.weight_decay, **_adamw_kernel(cfg.optim.kernel))
    r.scheduler = torch.optim.lr_scheduler.LambdaLR(r.optimizer, _lr_factor(cfg.optim, r.steps))
    parts.policy.model, r.optimizer, r.scheduler = accelerator.prepare(parts.policy.model, r.optimizer, r.scheduler)
    if parts.reference is not None:
        parts.reference.model.to(accelerator.device)
    if resume:
        path, state, skipped = checkpoint.load_newest(accelerator, r.run_dir / "checkpoints")
        if r.main:
            for line in skipped:
                _warn(f"{line}; resuming from {path.name} instead")
        parts.env.load_state_dict(state["env"])
        parts.objective.load_state_dict(state["objective"])
        parts.kind.load_state_dict(state.get("kind", {}))
        r.start = state["step"] + 1
        r.samples[:], r.curve[:] = state["samples"], state.get("curve", [])
        r.last.update(state["last"])
    r.step = r.start - 1
    r.skipped = int(r.last.get("nonfinite/skipped", 0))
    if accelerator.num_processes == 1 and accelerator.mixed_precision in ("no", "bf16"):  # fp16 has a loss scaler
        from accelerate.optimizer import AcceleratedOptimizer

        from rlx.small_steps import SmallSteps

        # the fast clip concatenates every gradient: for tiny networks only
        raw = r.optimizer.optimizer if isinstance(r.optimizer, AcceleratedOptimizer) else r.optimizer
        parts.stepper = SmallSteps(raw, raw.param_groups[0]["params"], fast=small)


def _accelerator(cpu: bool, precision: Any) -> Any:
    """The run's Accelerator in ``precision``. accelerate keeps one mixed-precision setting
    per process and refuses another: a process that trains runs one after another (tests,
    benchmarks, a notebook) resets it when the precision changes."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    held = AcceleratorState._shared_state.get("_mixed_precision")
    if held is not None and held != precision.accelerate:
        AcceleratorState._reset_state()  # the process group (PartialState) stays
    return Accelerator(cpu=cpu, mixed_precision=precision.accelerate)


def _open_tracking(r: _Run, command: str, resume: Resume | None) -> None:
    """The MLflow run and the catalog row (rank 0 only), new or reopened."""
    cfg, run_cfg, names = r.cfg, r.cfg.run, r.cfg.names
    if not r.main:  # only rank 0 talks to MLflow and the catalog
        return
    from rlx.run_naming import Identity

    identity = Identity(cfg, r.registry)
    run_name = identity.name
    config_dict = cfg.to_dict()
    tags = {**run_tags(cfg, r.parts, r.run_id, command, str(r.accelerator.device), r.accelerator.num_processes),
            **identity.tags(), "rlx.precision": r.precision.name, "rlx.precision_why": r.precision.why}
    from rlx.sweep_member import SweepMember
    from rlx.tracking import Tracker

    r.member = SweepMember.from_env()
    if r.member is not None:
        from rlx.progress_file import Heartbeat

        tags.update(r.member.tags())
        r.heartbeat = Heartbeat(r.run_dir, r.steps, headline(r.parts.specs[0], r.parts.specs[3]))

    if resume:
        if r.catalog is not None:
            with r.signals.holding():
                r.catalog.mark_running(r.run_id)
        r.tracker = Tracker.reopen(r.uri, resume.mlflow_run_id, r.run_id, system_metrics=run_cfg.system_metrics)
    else:
        r.tracker = Tracker(r.uri, run_cfg.experiment, run_name, tags, flatten(config_dict),
                            rlx_home.artifact_root(r.uri), rlx_run_id=r.run_id, system_metrics=run_cfg.system_metrics)
        r.opened = True
        _log_datasets(r)
        if r.catalog is not None:
            from rlx.registry.catalog import RunRecord

            with r.signals.holding():
                r.catalog.sync_plugins(r.registry.rows())
                r.catalog.add_run(RunRecord(
                    id=r.run_id, name=run_name, objective=names["objective"], rewards=names["reward"], env=names["env"],
                    policy=names["policy"], seed=run_cfg.seed, experiment=run_cfg.experiment,
                    mlflow_run_id=r.tracker.run_id, tracking_uri=r.uri if r.tracker.enabled else "",
                    config_json=json.dumps(config_dict), command=tags["rlx.command"],
                    num_processes=r.accelerator.num_processes, headline=tags["rlx.headline"],
                    accelerate_config=os.environ.get("RLX_ACCELERATE_CONFIG", ""),
                    sweep_id=r.member.sweep_id if r.member else "", cell=r.member.cell if r.member else ""))
        r.tracker.log_text(json.dumps(config_dict, indent=2), "config.json")
    r.registry.hook.rlx_run_start(run_id=r.run_id, config=config_dict)


def _log_datasets(r: _Run) -> None:
    """The environment's datasets as the run's inputs (MLflow's Datasets); a problem with
    them is a warning, not a failed run."""
    if not r.tracker.enabled:
        return
    try:
        infos = r.parts.env.datasets()
        if infos:
            r.tracker.log_inputs(infos)
    except Exception as exc:
        _warn(f"could not log the environment's datasets to MLflow: {_line(exc)}")


def _train_steps(r: _Run) -> None:
    """Steps ``start..steps``: one ``train_step`` each, then its metrics, the evaluation
    and checkpoint schedules, signals and early stops. Ends with a checkpoint and a final
    evaluation."""
    run_cfg, parts = r.cfg.run, r.parts
    r.bar.update(r.step, r.last)
    if r.start == 1:
        _evaluate(r, 0)
    step = r.start - 1
    for step in range(r.start, r.steps + 1):
        parts.objective.begin_step(step, r.steps)
        batch, metrics, problem = train_step(parts, r.cfg, r.accelerator, r.optimizer, r.scheduler, step)
        r.step = step
        if problem:
            if run_cfg.on_nonfinite == "stop":
                raise NonFinite(f"non-finite value at step {step}: {problem}; set run.on_nonfinite=skip to "
                                "skip such steps, or lower optim.lr")
            r.skipped += 1
            if r.main and problem not in r.skip_reasons:  # once per reason: a broken scorer must be named
                r.skip_reasons.add(problem)
                _warn(f"step {step} skipped: {problem} (run.on_nonfinite=skip; counted in nonfinite/skipped)")
        metrics["nonfinite/skipped"] = r.skipped
        _watch_zero_gradient(r, metrics, step)
        if r.main and step % 10 == 1 and run_cfg.samples_to_log:
            r.samples.extend(_sample_row(row, step, "train") for row in parts.kind.train_samples(batch, step))
        r.last.update(metrics)
        if r.tracker:
            r.tracker.log_metrics(metrics, step)
        if r.heartbeat:
            r.heartbeat.beat(step, r.last, force=step == r.steps)
        r.bar.update(step, metrics)
        stop = _stop_requested(r, step, metrics)
        if not stop and run_cfg.eval_every and step % run_cfg.eval_every == 0 and step != r.steps:
            _evaluate(r, step)
        if run_cfg.checkpoint_every and step % run_cfg.checkpoint_every == 0 and step != r.steps:
            _checkpoint(r, step)
        _stop_if_signalled(r, step)
        if stop:
            break
    if step >= r.start and r.saved_at != step:
        # the last step is checkpointed before the final evaluation and save: a run
        # stopped from here on resumes without training again
        _checkpoint(r, step)
    if step >= r.start or r.start > max(r.steps, 1):  # trained here, or resumed after its last step
        _evaluate(r, step)
    _stop_if_signalled(r, step)


def _evaluate(r: _Run, step: int) -> None:
    """The kind's evaluation of the policy (for runs that train one) and the objective's
    own held-out metrics, logged at ``step``. Rank 0 alone: evaluation has no collectives."""
    if not r.main:
        return
    parts = r.parts
    metrics: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    with in_precision(r.accelerator)():
        if r.produces == "policy":
            result = parts.kind.evaluate()
            metrics.update(result.metrics)
            rows = result.rows[:r.cfg.run.samples_to_log]
        metrics.update(parts.objective.held_out_metrics(parts.env, parts.policy, parts.reference))
    if not metrics:
        return
    r.samples.extend(_sample_row(row, step, "eval") for row in rows)
    key = next(iter(metrics))
    r.curve.append([step, key, metrics[key]])
    r.last.update(metrics)
    r.tracker.log_metrics(metrics, step)
    if r.heartbeat:
        r.heartbeat.beat(step, r.last, force=True, trained=False)
    r.bar.eval(step, key, metrics[key])


def _sample_row(row: dict[str, Any], step: int, split: str) -> dict[str, Any]:
    """A row of the samples table: the loop's ``step`` and ``split`` first (and they win),
    then the kind's columns."""
    return {"step": step, "split": split, **{k: v for k, v in row.items() if k not in ("step", "split")}}


def _checkpoint(r: _Run, step: int) -> None:
    """A resumable checkpoint of everything the run needs to continue exactly after ``step``."""
    from rlx import checkpoint

    if r.tracker:
        r.tracker.flush()
    parts = r.parts
    state = {"env": parts.env.state_dict(), "objective": parts.objective.state_dict(),
             "kind": parts.kind.state_dict(), "samples": r.samples, "last": r.last, "curve": r.curve}
    path = checkpoint.save(r.accelerator, r.run_dir / "checkpoints", step, state, r.cfg.run.keep_checkpoints)
    r.saved_at = step
    if r.main and r.catalog is not None:
        with r.signals.holding():
            r.catalog.update_run(r.run_id, checkpoint=str(path))


def _stop_if_signalled(r: _Run, step: int) -> None:
    from rlx.interrupts import RunInterrupted, signal_name

    received = r.signals.received
    if _agree(received is not None):
        if r.saved_at != step:
            _checkpoint(r, step)
        name = signal_name(received) if received is not None else "a signal on another rank"
        raise RunInterrupted(received or 2, f"interrupted by {name} after step {step}")


def _stop_requested(r: _Run, step: int, metrics: dict[str, float]) -> bool:
    """Whether a plugin's ``rlx_step_end`` hook asked to stop (on rank 0; every rank
    follows). The plugin and the step are recorded as tags."""
    by = r.registry.stop_requests(step, metrics) if r.main else []
    if not _agree(bool(by)) or step == r.steps:  # at the last step there is nothing left to stop
        return False
    if r.main:
        r.stopped_by = by[0] if by else "a hook on another rank"
        _warn(f"plugin '{r.stopped_by}' stopped the run early after step {step} of {r.steps}")
        if r.tracker:
            r.tracker.set_tags({"rlx.stopped_by": r.stopped_by, "rlx.stopped_at_step": str(step)})
    return True


def _watch_zero_gradient(r: _Run, metrics: dict[str, float], step: int) -> None:
    """One warning when the gradient has been exactly 0 on every step so far: nothing is
    learned, typically a group-relative objective sampling groups of 1."""
    if r.zero_steps < 0 or r.start != 1 or "optim/grad_norm" not in metrics:  # from step 1 only: "so far"
        return
    if float(metrics["optim/grad_norm"]) != 0.0:
        r.zero_steps = -1
        return
    r.zero_steps += 1
    if r.zero_steps == ZERO_GRADIENT_STEPS and r.main:
        r.zero_steps = -1
        g = r.parts.objective.group_size
        why = (f"objective '{r.cfg.names['objective']}' samples 1 per task, and a group-relative objective needs "
               "groups of 2 or more (its config's num_generations)" if g == 1 else
               "do the rewards vary within a batch?")
        _warn(f"the gradient has been exactly 0 on every step so far ({step} steps): nothing is being learned; {why}")


def _finish(r: _Run, resume: Resume | None) -> list[str]:
    """Save the policy of a finished run, then record how the run ended in the catalog and
    in MLflow, whatever happened. Returns what could not be done, one line each."""
    from datetime import datetime, timezone

    from rlx.interrupts import RunInterrupted

    problems: list[str] = []
    parts, tracker, main = r.parts, r.tracker, r.main
    cfg, registry, catalog, signals = r.cfg, r.registry, r.catalog, r.signals
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
            note = f"stopped early by plugin '{r.stopped_by}' after step {r.step} of {r.steps}" if r.stopped_by else ""
            catalog.update_run(r.run_id, status=r.status, metrics=r.last, policy_dir=r.policy_dir, error=r.error,
                               note=note, ended_at=datetime.now(timezone.utc))
        except Exception as exc:
            problems.append(f"the catalog could not record that run {r.run_id} {r.status}: {_line(exc)}")
    if tracker:
        try:
            lost = tracker.close(r.status, r.error, step=r.step)
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

    objective = r.parts.objective
    # with tracking off the Tracker exists but logs nothing: MLflow must not be touched at
    # all (logging the model would create the store that --no-tracking promises not to)
    tracker = r.tracker if r.tracker is not None and r.tracker.enabled else None
    if save_to is not None:
        r.parts.policy.save(save_to)
        objective.save_alongside(save_to)
        r.policy_dir = str(save_to)
        if tracker and _dir_size(save_to) < 50 * 2**20:  # big checkpoints stay on disk only
            tracker.log_artifacts(save_to, "policy")
        if tracker and r.cfg.run.log_model:
            _log_model(r, save_to)
    if tracker:
        with tempfile.TemporaryDirectory() as folder:
            objective.artifacts(Path(folder))
            if any(Path(folder).iterdir()):
                tracker.log_artifacts(Path(folder), None)
                tracker.mark_tables(sorted(f.name for f in Path(folder).glob("*_table.json")))


def _log_model(r: _Run, saved: Path) -> None:
    """The saved policy (or reward model) as an MLflow model of the run, in the flavour its
    plugin chooses (``Policy.log_model``), registered under ``run.register_as`` if set. A
    failure here is a warning: the run trained, and its files are saved either way."""
    name = r.produces  # "policy" or "reward_model": the model's name on the run page
    tracker, register_as = r.tracker, r.cfg.run.register_as
    tags: dict[str, str] = {}
    with tracker.fluent_store():
        try:
            target = tracker.new_model(name, r.step)
            flavour = r.parts.policy.log_model(saved, target)
        except Exception as exc:
            _warn(f"could not log the {name} as an MLflow model: {_line(exc)} (its files are in {saved})")
            return
        if not flavour:
            tracker.drop_model(target.model_id)
            if register_as:
                _warn(f"policy '{r.cfg.names['policy']}' does not log MLflow models (Policy.log_model), so nothing "
                      f"was registered as '{register_as}'")
            return
        tags = {"rlx.model_id": target.model_id, "rlx.model_flavour": flavour}
        if register_as:
            try:
                tags["rlx.registered_model"] = f"{register_as}/{tracker.register_model(target.model_id, register_as)}"
            except Exception as exc:
                _warn(f"could not register the {name} as '{register_as}': {_line(exc)}")
    tracker.set_tags(tags)


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


def _adamw_kernel(kernel: str) -> dict[str, bool]:
    """AdamW's implementation. ``auto``: fused, one pass over each tensor instead of a dozen
    (27M parameters on 2 CPU cores: 45 against 168 ms per step single-tensor, measured on
    2026-12-03; for tiny networks it is what lets ``SmallSteps`` step them in one call).
    The kernels round differently: figures measured before 2026-12-03 used single-tensor
    for LM policies."""
    if kernel == "auto":
        kernel = "fused"
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
