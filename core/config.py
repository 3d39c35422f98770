"""Run configuration: composed from defaults < ``--config`` TOML < flags < ``--set``.

Run-level sections (``run``, ``generation``, ``optim``) are validated here; component
sections (``objective``, ``env``, ``policy``, ``reward.<name>``) are validated against
the config model each plugin registered. Errors name the dotted field and the allowed
values.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from rlx.errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


SEED_MAX = 2**32 - 1  # numpy's legacy seeding (accelerate's set_seed) and gymnasium take 32-bit seeds
# an experiment name is the name of its artifact folder (<store>/mlartifacts/<name>): it must
# fit in one file name (255 bytes on common file systems) with room for a suffix
EXPERIMENT_MAX_BYTES = 200
RUN_NAME_MAX = 250  # MLflow's column for run names (runs.name) is String(250)


def _check_experiment(name: str) -> str:
    """An experiment name becomes a folder under the store's mlartifacts folder: '/'
    separates folders (``rlx/arithmetic``), and each part must be a name that stays inside."""
    if not name.strip():
        raise PydanticCustomError("experiment_name", "an experiment needs a name; pass --experiment NAME")
    # Cs: lone surrogates, what undecodable bytes of a command line become; no store can hold them
    bad = next((c for c in name if c == "\\" or unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise PydanticCustomError(
            "experiment_name", "{char} is not allowed in an experiment name (it names folders); "
            "use letters, digits, '-', '_', '.', spaces, and '/' between folder names", {"char": repr(bad)})
    parts = name.split("/")
    if any(not part.strip() for part in parts):
        raise PydanticCustomError(
            "experiment_name", "an experiment name is not a path: '/' may only separate folder names "
            "(no leading, trailing or double '/'), e.g. rlx/arithmetic")
    if any(part in (".", "..") for part in parts):
        raise PydanticCustomError("experiment_name", "'.' and '..' are not experiment names; pick a word")
    size = len(name.encode("utf-8"))
    if size > EXPERIMENT_MAX_BYTES:
        raise PydanticCustomError(
            "experiment_name", "an experiment name may be at most {limit} bytes (it is {size}); shorten it",
            {"limit": EXPERIMENT_MAX_BYTES, "size": size})
    return name


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(150, ge=0, description="Training steps (one collected batch and its updates each).")
    env_steps: int | None = Field(None, ge=1, description="Control environments: train for this many environment "
                                                          "steps instead (steps = env_steps / batch env steps).")
    seed: int = Field(0, description=f"Seed for every RNG (torch, python, environment): 0..{SEED_MAX}, the "
                                     "32-bit range numpy and gymnasium accept.")
    batch_size: int = Field(16, ge=1, description="Tasks per step and process, as the environment kind reads it "
                                                  "(text: prompts, samples = batch_size x group size; preference: "
                                                  "pairs; control: unused, num_envs x rollout_length instead).")
    eval_every: int = Field(50, ge=0, description="Evaluate every N steps (0: only before and after training).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train; auto picks CUDA when present.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Arithmetic of training and sampling: bf16 (fp16: CUDA only) is accelerate's mixed "
                            "precision, fp32 master weights and optimizer state; auto: bf16 on a GPU that has it "
                            "and on a CPU with AMX (policies of 0.25M+ parameters) or AVX512-BF16 (5M+), else fp32 "
                            "(the choice is tagged rlx.precision).")
    experiment: str | None = Field(None, description="MLflow experiment name (default: rlx/<task>, e.g. "
                                   "rlx/arithmetic, rlx/CartPole-v1); also its artifact folder: '/' separates "
                                   "folder names, no '\\' or control characters, no '.' or '..' part, at most "
                                   f"{EXPERIMENT_MAX_BYTES} bytes.")
    name: str | None = Field(None, max_length=RUN_NAME_MAX,
                             description="Run name (default: <objective>[-<what differs from the defaults>]"
                                         "[-<reward unless the environment's default>]-<task>-s<seed>); at most "
                                         f"{RUN_NAME_MAX} characters, MLflow's limit.")
    save_policy: bool = Field(True, description="Save the final policy under the run's folder and as an MLflow artifact.")
    log_model: bool = Field(True, description="Also log the saved policy (or reward model) as an MLflow model, in "
                                              "its library's flavour (transformers, pyfunc): the run's Models tab "
                                              "and mlflow.<flavour>.load_model find it.")
    register_as: str | None = Field(None, min_length=1, max_length=RUN_NAME_MAX,
                                 description="Register the logged model under this name in the MLflow model "
                                             "registry (a new version each run; --register NAME).")
    system_metrics: bool = Field(True, description="Record MLflow's system metrics (CPU, memory, disk, network; "
                                                   "GPU with nvidia-ml-py) every 10 s (MLFLOW_SYSTEM_METRICS_"
                                                   "SAMPLING_INTERVAL), from the process that writes the metrics.")
    samples_to_log: int = Field(8, ge=0, description="Sample rows per evaluation kept in the samples table "
                                                    "(generations, for text).")
    threads: int = Field(0, ge=0, description="torch CPU threads (0: all cores).")
    flush_denormal: bool = Field(True, description="Flush denormal floats (below 1.2e-38) to zero on the CPU "
                                                   "thread that trains: arithmetic on them is many times slower "
                                                   "(a DQN run's update took 20% longer without), and no result "
                                                   "that far below float32's normal range changes what is learned.")
    checkpoint_every: int = Field(50, ge=0, description="Save a resumable checkpoint every N steps (0: only on Ctrl-C).")
    keep_checkpoints: int = Field(2, ge=1, description="How many of the newest checkpoints to keep.")
    on_nonfinite: Literal["skip", "stop"] = Field(
        "skip", description="A NaN/Inf reward, loss or gradient: skip the update (counted in nonfinite/skipped) "
                            "or stop the run as FAILED.")

    @field_validator("seed")
    @classmethod
    def _seed_range(cls, v: int) -> int:
        if not 0 <= v <= SEED_MAX:
            raise PydanticCustomError(
                "seed_range", "seeds must be from 0 to {max} (2**32-1), the range numpy and gymnasium seed "
                "with; pick one in that range", {"max": SEED_MAX})
        return v

    @field_validator("experiment")
    @classmethod
    def _experiment_name(cls, v: str | None) -> str | None:
        return None if v is None else _check_experiment(v)


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(48, ge=1, description="Completion length limit during training and evaluation.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for training rollouts (evaluation is greedy).")
    min_new_tokens: int = Field(0, ge=0, description="Suppress EOS before this many tokens (fixed-length benchmarks).")


class OptimSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-4, gt=0, le=1.0,
                      description="AdamW learning rate, in (0, 1]: Adam moves every weight by about lr per step "
                                  "whatever the gradient's scale, so above 1 one step outweighs the weights "
                                  "themselves (useful values: about 1e-6 to 1e-2).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping by global norm (0: off).")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps.")
    schedule: Literal["constant", "linear"] = Field("constant", description="Learning rate after warm-up: constant, "
                                                                            "or linear decay to 0 at the last step.")
    kernel: Literal["auto", "single", "foreach", "fused"] = Field(
        "auto", description="AdamW implementation; auto: fused (one pass per tensor; the fastest here).")


SETTINGS = {"run": RunSettings, "generation": GenerationSettings, "optim": OptimSettings}
COMPONENTS = {"objective": "objective", "env": "environment", "policy": "policy"}

# Components left unnamed are chosen by the registrations (``resolve``): the named
# environment's kind's default objective, else the objective registered as the default;
# the first accepted kind's default environment; the environment kind's default policy;
# the environment's default reward.
DEFAULTS: dict[str, Any] = {
    "objective": {},
    "env": {},
    "policy": {},
    "reward": {},
    "run": {},
    "generation": {},
    "optim": {},
    "plugins": {},  # settings of lifecycle-hook plugins, one table per plugin
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _normalize(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    """Accept ``objective = "grpo"`` as shorthand for ``[objective] name = "grpo"`` and
    ``reward = ["prm"]`` for ``[reward.prm]``."""
    out = dict(raw)
    for key in COMPONENTS:
        if isinstance(out.get(key), str):
            out[key] = {"name": out[key]}
    if isinstance(out.get("reward"), str):
        out["reward"] = [out["reward"]]
    if isinstance(out.get("reward"), list):
        out["reward"] = {str(n): {} for n in out["reward"]}
    unknown = set(out) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{origin}: unknown section '{sorted(unknown)[0]}'; allowed: {', '.join(DEFAULTS)}")
    for key, val in out.items():
        if not isinstance(val, dict):
            if key == "reward":
                raise ConfigError(f"{origin}: 'reward' must be a table of reward sources or a list of their names, "
                                  f"got {type(val).__name__} {val!r}; e.g. reward = [\"NAME\"], or a "
                                  "[reward.NAME] table with its settings")
            raise ConfigError(f"{origin}: '{key}' must be a table, got {type(val).__name__}")
    for name, val in out.get("reward", {}).items():
        _check_reward_table(name, val, origin)
    return out


def _check_reward_table(name: str, val: Any, origin: str) -> None:
    """``reward.<name>`` holds that source's settings; a bare value there is a setting
    without its field name."""
    if isinstance(val, dict):
        return
    example = val if isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val) else 1
    hint = (f"--set reward.{name}.weight={example}" if origin.startswith("--set")
            else f"a [reward.{name}] table with weight = {example}")
    raise ConfigError(f"{origin}: reward.{name} must be a table of that reward's settings, got "
                      f"{type(val).__name__} {val!r}; set a field of it instead, e.g. {hint}")


def load_toml(path: str | Path) -> dict[str, Any]:
    """A ``--config`` file: TOML, or JSON (what ``rlx run --dry-run`` prints, so that it
    re-creates the run), told apart by the ``.json`` suffix or a leading ``{``."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"config path '{p}' is a directory; pass a TOML or JSON file to --config")
    if not p.is_file():
        raise UsageError(f"config file '{p}' does not exist; pass an existing TOML or JSON file to --config")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file '{p}': {exc}") from None
    as_json = p.suffix.lower() == ".json" or text.lstrip().startswith("{")
    kind = "JSON" if as_json else "TOML"
    try:
        data = json.loads(text) if as_json else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file '{p}' is not valid {kind}: {exc}; fix the syntax") from None
    except RecursionError:  # both parsers descend recursively into nested arrays and tables
        raise ConfigError(f"config file '{p}' is not valid {kind}: arrays or tables nest too deeply to parse; "
                          "fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a table of sections (objective, env, run, ...), "
                          f"got {type(data).__name__}")
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"config file '{p}' nests arrays or tables more than {MAX_DEPTH} levels deep; no rlx "
                          "setting is that deep: fix the file")
    return _normalize(data, str(p))


# deeper values than any setting needs, yet shallow enough that copying and validating
# them stays far from Python's recursion limit
MAX_DEPTH = 64


def _depth(value: Any) -> int:
    """How deep lists and tables nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal when it parses as one (numbers, booleans, quoted
    strings, arrays), else the raw string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        value = None  # deeper than MAX_DEPTH for sure: reported below
    if value is None or _depth(value) > MAX_DEPTH:
        raise UsageError(f"--set value '{text[:40]}...' nests arrays or tables more than {MAX_DEPTH} levels deep; "
                         "no rlx setting is that deep")
    return value


def parse_set(item: str) -> dict[str, Any]:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"--set '{item}' is not of the form dotted.key=value (e.g. --set objective.beta=0.1)")
    node: dict[str, Any] = {}
    cur = node
    parts = key.split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = parse_value(value)
    return node


def compose(config_file: str | Path | None = None, flags: dict[str, Any] | None = None,
            sets: list[str] | None = None) -> dict[str, Any]:
    """The raw (unvalidated) config: defaults < TOML < flags < --set."""
    cfg = copy.deepcopy(DEFAULTS)
    if config_file:
        cfg = _merge(cfg, load_toml(config_file))
    return apply_flags(cfg, flags, sets)


def apply_flags(cfg: dict[str, Any], flags: dict[str, Any] | None = None, sets: list[str] | None = None) -> dict[str, Any]:
    """``rlx run``'s flags and ``--set`` items on top of a raw config (what ``compose`` does
    after the file; ``rlx sweep`` applies them to a spec's base)."""
    cfg = copy.deepcopy(cfg)
    flags = flags or {}
    for key in ("objective", "env", "policy"):
        if flags.get(key):
            if cfg[key].get("name") != flags[key]:
                cfg[key] = {"name": flags[key]}
    if flags.get("reward"):
        cfg["reward"] = {n: cfg["reward"].get(n, {}) for n in flags["reward"]}
    for key in ("seed", "steps", "experiment", "device", "precision", "register_as", "system_metrics"):
        if flags.get(key) is not None:
            cfg["run"][key] = flags[key]
    for item in sets or []:
        cfg = _merge(cfg, _normalize(parse_set(item), f"--set {item}"))
    return cfg


def _format_error(section: str, err: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(x) for x in (section, *err["loc"]))
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(model.model_fields) or "none"
        return f"{loc}: unknown field; allowed fields: {allowed}"
    got = err.get("input")
    if isinstance(got, float) and not math.isfinite(got) and not kind.endswith("_type"):
        return f"{loc}: must be a finite number (got {got!r})"  # nan fails ``gt=0`` as well, but that is not why
    msg = err["msg"]
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:60] + "..."
    return f"{loc}: {msg} (got {shown})"


def _nonfinite(value: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], float] | None:
    """The first NaN or infinite float in ``value`` (models, tables and lists searched),
    with where it sits."""
    stack = [(loc, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return where, v
        if isinstance(v, BaseModel):
            items = [(k, getattr(v, k, None)) for k in type(v).model_fields]
        elif isinstance(v, dict):
            items = list(v.items())
        elif isinstance(v, (list, tuple, set, frozenset)):
            items = list(enumerate(v))
        else:
            continue
        stack.extend((where + (k,), x) for k, x in reversed(items))
    return None


def validate_section(section: str, model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """``values`` validated by ``model``; every error names ``section.field``. No setting
    may be NaN or infinite: the model's own constraints rarely exclude them (``nan > 0`` is
    false, ``inf > 0`` true), and a string such as ``"inf"`` only becomes one here."""
    try:
        out = model.model_validate(values)
    except ValidationError as exc:
        lines = [_format_error(section, e, model) for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None
    bad = _nonfinite(out, (section,))
    if bad is not None:
        raise ConfigError(f"{'.'.join(map(str, bad[0]))}: must be a finite number (got {bad[1]!r})")
    return out


class Resolved(BaseModel):
    """A validated config: component specs' configs plus run-level settings."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    names: dict[str, str]
    objective: BaseModel
    env: BaseModel
    policy: BaseModel
    rewards: dict[str, BaseModel]
    run: RunSettings
    generation: GenerationSettings
    optim: OptimSettings
    plugins: dict[str, dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The full resolved config: feeding it back to ``compose`` re-creates this run."""
        return {
            "objective": {"name": self.names["objective"], **self.objective.model_dump(mode="json")},
            "env": {"name": self.names["env"], **self.env.model_dump(mode="json")},
            "policy": {"name": self.names["policy"], **self.policy.model_dump(mode="json")},
            "reward": {n: c.model_dump(mode="json") for n, c in self.rewards.items()},
            "run": self.run.model_dump(mode="json"),
            "generation": self.generation.model_dump(mode="json"),
            "optim": self.optim.model_dump(mode="json"),
            **({"plugins": copy.deepcopy(self.plugins)} if self.plugins else {}),
        }


def _chosen_names(raw: dict[str, Any], registry: Any) -> dict[str, Any]:
    """The objective, environment and policy specs: those named, else the registrations'
    defaults (see ``DEFAULTS``)."""
    named = {section: (raw.get(section) or {}).get("name") for section in COMPONENTS}
    if not named["objective"] and named["env"]:  # `--env gym` alone: what its kind trains by default
        named["objective"] = _kind_of(registry.get("environment", str(named["env"])), registry).meta["default_objective"]
    if named["objective"]:
        objective = registry.get("objective", str(named["objective"]))
    else:
        marked = [s for s in registry.components["objective"].values() if s.meta["default"] and not s.unavailable]
        if len(marked) != 1:
            why = ("no installed plugin registers a default objective" if not marked else
                   f"several objectives are registered as the default ({', '.join(s.name for s in marked)})")
            raise ConfigError(f"objective.name is missing and {why}; choose one with --objective")
        objective = marked[0]
    accepts = objective.meta["accepts"]
    if named["env"]:
        env = registry.get("environment", str(named["env"]))
    else:
        env = None
        for kind_name in accepts:
            kind = registry.components["kind"].get(kind_name)
            if kind is not None and kind.meta["default_env"] and not kind.unavailable:
                env = registry.get("environment", kind.meta["default_env"])
                break
        if env is None:
            raise ConfigError(f"env.name is missing and no kind that objective '{objective.name}' accepts "
                              f"({', '.join(accepts)}) names a default environment; choose one with --env")
    kind = _kind_of(env, registry)
    if named["policy"]:
        policy = registry.get("policy", str(named["policy"]))
    elif kind.meta["default_policy"]:
        policy = registry.get("policy", kind.meta["default_policy"])
    else:
        raise ConfigError(f"policy.name is missing and kind '{kind.name}' names no default policy; "
                          "choose one with --policy")
    return {"objective": objective, "env": env, "policy": policy, "kind": kind}


def _kind_of(env_spec: Any, registry: Any) -> Any:
    name = env_spec.meta["kind"]
    kinds = registry.components["kind"]
    if name not in kinds:
        known = ", ".join(sorted(kinds)) or "none"
        off = sorted(n for n, i in registry.plugins.items() if i.status != "ok")
        hint = (f"; plugins disabled or broken: {', '.join(off)}" if off else "")
        raise UsageError(f"environment '{env_spec.name}' is of kind '{name}', which no loaded plugin provides "
                         f"(kinds: {known}{hint}); install or enable the plugin that registers kind '{name}'")
    return registry.get("kind", name)


def resolve(raw: dict[str, Any], registry: Any) -> Resolved:
    """Validate a composed config against the registered components."""
    specs = _chosen_names(raw, registry)
    kind = specs.pop("kind")
    names = {section: spec.name for section, spec in specs.items()}
    names["kind"] = kind.name
    raw_parts = {section: {k: v for k, v in (raw.get(section) or {}).items() if k != "name"} for section in specs}
    obj_meta = specs["objective"].meta
    accepts = obj_meta["accepts"]
    if kind.name not in accepts:
        raise UsageError(
            f"objective '{names['objective']}' does not accept {kind.name} environments like "
            f"'{names['env']}' (it accepts: {', '.join(accepts)}); choose another --env or --objective")
    if obj_meta["data"] not in kind.meta["data"]:
        raise UsageError(f"objective '{names['objective']}' learns from {obj_meta['data']}, which kind '{kind.name}' "
                         f"does not collect (it collects: {', '.join(kind.meta['data'])}); choose another --objective")
    interface = specs["policy"].meta["interface"]
    if interface != kind.meta["interface"]:
        default = kind.meta["default_policy"]
        raise UsageError(f"policy '{names['policy']}' implements the '{interface}' interface; {kind.name} environments "
                         f"like '{names['env']}' need a '{kind.meta['interface']}' policy"
                         + (f" such as --policy {default}" if default else "") + "; choose another --policy")
    # an objective's registered defaults sit under the user's values; ``kind_defaults``
    # refine them per environment kind (ppo on CartPole and ppo on arithmetic differ)
    obj_defaults = _merge(obj_meta["defaults"], obj_meta["kind_defaults"].get(kind.name, {}))
    parts: dict[str, BaseModel] = {}
    for section, spec in specs.items():
        base = obj_defaults.get(section, {})
        if section != "objective":  # only fields this component has: another plugin may sit there
            base = {k: v for k, v in base.items() if k in spec.config.model_fields}
        parts[section] = validate_section(section, spec.config, {**copy.deepcopy(base), **raw_parts[section]})

    reward_raw = dict(raw.get("reward") or {})
    if not reward_raw and obj_meta["data"] == "rollouts":
        default = specs["env"].meta["default_reward"]
        if default:
            reward_raw = {default: {}}
    rewards: dict[str, BaseModel] = {}
    for rname, values in reward_raw.items():
        _check_reward_table(rname, values if values is not None else {}, "config")
        spec = registry.get("reward", rname)
        if spec.meta["kinds"] and kind.name not in spec.meta["kinds"]:
            raise UsageError(f"reward '{spec.name}' scores {', '.join(spec.meta['kinds'])} batches, not {kind.name} "
                             f"ones like '{names['env']}' gives; choose another --reward")
        rewards[spec.name] = validate_section(f"reward.{rname}", spec.config, dict(values or {}))
    if obj_meta["data"] == "rollouts" and not rewards:
        raise UsageError(f"objective '{names['objective']}' learns from rewards but none was given; add --reward NAME")

    # an objective's own defaults for run-level settings sit under the user's values
    settings = {}
    for k, m in SETTINGS.items():
        user = dict(raw.get(k) or {})
        base = dict(obj_defaults.get(k, {}))
        if k == "run" and "steps" in user:  # an explicit step count beats a default env-step budget
            base.pop("env_steps", None)
        settings[k] = validate_section(k, m, {**base, **user})
    names["reward"] = ",".join(rewards)
    if settings["run"].experiment is None:  # concrete from here on: sweeps, the catalog and config.json see it
        from rlx.run_naming import default_experiment, task_name

        experiment = default_experiment(task_name(names, parts["env"], specs["env"]))
        try:
            _check_experiment(experiment)
        except PydanticCustomError:  # a task value no folder can be named after (too long, '..')
            experiment = default_experiment(names["env"])
        settings["run"] = settings["run"].model_copy(update={"experiment": experiment})
    return Resolved(names=names, objective=parts["objective"], env=parts["env"], policy=parts["policy"],
                    rewards=rewards, plugins=_plugin_settings(raw.get("plugins") or {}, registry), **settings)


def _plugin_settings(tables: dict[str, Any], registry: Any) -> dict[str, dict[str, Any]]:
    """``[plugins.<name>]`` tables: settings for a lifecycle-hook plugin, which reads them
    in ``rlx_run_start``. The plugin must be loaded, so a typo does not pass silently."""
    import difflib

    out: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        info = registry.plugins.get(name)
        if info is None or info.status != "ok":
            close = difflib.get_close_matches(name, [n for n, i in registry.plugins.items() if i.status == "ok"], n=1)
            why = "is not installed" if info is None else f"is {info.status}"
            raise ConfigError(f"plugins.{name}: plugin '{name}' {why}; "
                              + (f"did you mean '{close[0]}'? " if close else "") + "see `rlx plugins list`")
        if not isinstance(table, dict):
            raise ConfigError(f"plugins.{name} must be a table of that plugin's settings, got {type(table).__name__}")
        out[name] = copy.deepcopy(table)
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
