"""Run configuration: composed from defaults < ``--config`` TOML < flags < ``--set``.

Run-level sections (``run``, ``generation``, ``optim``) are validated here; component
sections (``objective``, ``env``, ``policy``, ``reward.<name>``) are validated against
the config model each plugin registered. Errors name the dotted field and the allowed
values.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlx.errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(150, ge=0, description="Training steps (one collected batch and its updates each).")
    env_steps: int | None = Field(None, ge=1, description="Control environments: train for this many environment "
                                                          "steps instead (steps = env_steps / batch env steps).")
    seed: int = Field(0, description="Seed for every RNG (torch, python, environment).")
    batch_size: int = Field(16, ge=1, description="Prompts (tasks) per step; samples = batch_size x group size.")
    eval_every: int = Field(50, ge=0, description="Evaluate every N steps (0: only before and after training).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train; auto picks CUDA when present.")
    experiment: str = Field("rlx", description="MLflow experiment name.")
    name: str | None = Field(None, description="Run name (default: <objective>-<reward>-<env>-s<seed>).")
    save_policy: bool = Field(True, description="Save the final policy under the run's folder and as an MLflow artifact.")
    samples_to_log: int = Field(8, ge=0, description="Generations per evaluation kept in the samples table.")
    threads: int = Field(0, ge=0, description="torch CPU threads (0: all cores).")
    checkpoint_every: int = Field(50, ge=0, description="Save a resumable checkpoint every N steps (0: only on Ctrl-C).")
    keep_checkpoints: int = Field(2, ge=1, description="How many of the newest checkpoints to keep.")
    on_nonfinite: Literal["skip", "stop"] = Field(
        "skip", description="A NaN/Inf reward, loss or gradient: skip the update (counted in nonfinite/skipped) "
                            "or stop the run as FAILED.")


class GenerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(48, ge=1, description="Completion length limit during training and evaluation.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for training rollouts (evaluation is greedy).")
    min_new_tokens: int = Field(0, ge=0, description="Suppress EOS before this many tokens (fixed-length benchmarks).")


class OptimSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping by global norm (0: off).")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps.")
    schedule: Literal["constant", "linear"] = Field("constant", description="Learning rate after warm-up: constant, "
                                                                            "or linear decay to 0 at the last step.")
    kernel: Literal["auto", "single", "foreach", "fused"] = Field(
        "auto", description="AdamW implementation; auto: fused for control policies, single-tensor for LMs.")


SETTINGS = {"run": RunSettings, "generation": GenerationSettings, "optim": OptimSettings}
COMPONENTS = {"objective": "objective", "env": "environment", "policy": "policy"}

DEFAULTS: dict[str, Any] = {
    "objective": {"name": "grpo"},
    "env": {"name": "arithmetic"},
    "policy": {"name": "tiny"},
    "reward": {},
    "run": {},
    "generation": {},
    "optim": {},
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
            raise ConfigError(f"{origin}: '{key}' must be a table, got {type(val).__name__}")
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"config path '{p}' is a directory; pass a TOML file to --config")
    if not p.is_file():
        raise UsageError(f"config file '{p}' does not exist; pass an existing TOML file to --config")
    try:
        return _normalize(tomllib.loads(p.read_text()), str(p))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file '{p}' is not valid TOML: {exc}; fix the syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file '{p}': {exc}") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal when it parses as one (numbers, booleans, quoted
    strings, arrays), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


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
    flags = flags or {}
    for key in ("objective", "env", "policy"):
        if flags.get(key):
            if cfg[key].get("name") != flags[key]:
                cfg[key] = {"name": flags[key]}
    if flags.get("reward"):
        cfg["reward"] = {n: cfg["reward"].get(n, {}) for n in flags["reward"]}
    for key in ("seed", "steps", "experiment", "device"):
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
    msg = err["msg"]
    return f"{loc}: {msg} (got {got!r})"


def validate_section(section: str, model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        lines = [_format_error(section, e, model) for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None


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
        }


def resolve(raw: dict[str, Any], registry: Any) -> Resolved:
    """Validate a composed config against the registered components."""
    names: dict[str, str] = {}
    parts: dict[str, BaseModel] = {}
    specs: dict[str, Any] = {}
    raw_parts: dict[str, dict[str, Any]] = {}
    for section, kind in COMPONENTS.items():
        values = dict(raw.get(section) or {})
        name = values.pop("name", None)
        if not name:
            raise ConfigError(f"{section}.name is missing; choose one with --{section}")
        specs[section] = registry.get(kind, str(name))
        names[section] = specs[section].name
        raw_parts[section] = values
    # an objective's registered defaults sit under the user's values; ``kind_defaults``
    # refine them per environment kind (ppo on CartPole and ppo on arithmetic differ)
    env_kind = specs["env"].meta.get("kind", "text")
    obj_meta = specs["objective"].meta
    obj_defaults = _merge(obj_meta.get("defaults", {}), obj_meta.get("kind_defaults", {}).get(env_kind, {}))
    for section, spec in specs.items():
        base = obj_defaults.get(section, {})
        if section != "objective":  # only fields this component has: another plugin may sit there
            base = {k: v for k, v in base.items() if k in spec.config.model_fields}
        parts[section] = validate_section(section, spec.config, {**copy.deepcopy(base), **raw_parts[section]})

    obj_spec = registry.get("objective", names["objective"])
    env_spec = registry.get("environment", names["env"])
    accepts = obj_spec.meta.get("accepts", ("text",))
    if env_kind not in accepts:
        raise UsageError(
            f"objective '{names['objective']}' does not accept {env_kind} environments like "
            f"'{names['env']}' (it accepts: {', '.join(accepts)}); choose another --env or --objective")

    reward_raw = dict(raw.get("reward") or {})
    if not reward_raw and obj_spec.meta.get("data", "rollouts") == "rollouts":
        default = env_spec.meta.get("default_reward")
        if default:
            reward_raw = {default: {}}
    rewards: dict[str, BaseModel] = {}
    for rname, values in reward_raw.items():
        spec = registry.get("reward", rname)
        rewards[spec.name] = validate_section(f"reward.{rname}", spec.config, dict(values or {}))
    if obj_spec.meta.get("data", "rollouts") == "rollouts" and not rewards:
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
    return Resolved(names=names, objective=parts["objective"], env=parts["env"], policy=parts["policy"],
                    rewards=rewards, **settings)


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
