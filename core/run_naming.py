"""What a run is called and which runs belong together, as the MLflow UI shows them.

- the task: what the environment is, in a word (``arithmetic``, ``CartPole-v1``): the
  environment's registered name, or the value of the config field its registration names
  as ``task_field`` (gym: ``id``);
- the variant: the settings that differ from what the same components give with no
  ``--set`` (tag ``rlx.variant``), so a ``dr_grpo`` run and a plain GRPO run are told apart;
- the group: a digest of the config without the settings that do not change what is
  learned (``NOT_SETTINGS``: seed, name, where it ran, how often it is saved), tag
  ``rlx.group``. Seeds of one configuration share it, so MLflow's "group by" on that one
  tag draws their mean and band;
- the default run name, ``<objective>[-<variant>][-<reward>]-<task>-s<seed>``, and the
  default experiment, ``rlx/<task>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# settings that differ between runs without making them different experiments: the seed,
# the names, where and how fast it ran, what is kept and how often it is evaluated
NOT_SETTINGS = frozenset({
    "run.seed", "run.name", "run.experiment", "run.device", "run.threads", "run.samples_to_log",
    "run.checkpoint_every", "run.keep_checkpoints", "run.save_policy", "run.eval_every",
    "run.log_model", "run.register_as", "run.system_metrics",
})
NAME_VARIANT_MAX = 64  # characters of the variant inside a run name; the tag holds all of it
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f]")


def task_name(names: dict[str, str], env_config: Any, env_spec: Any) -> str:
    """The environment's task in a word: the value of its registration's ``task_field``
    (e.g. gym's ``id``), else its registered name."""
    field = env_spec.meta.get("task_field") if env_spec is not None else None
    value = getattr(env_config, field, None) if field else None
    text = str(value).strip() if value not in (None, "") else names["env"]
    return _UNSAFE.sub("-", text) or names["env"]


def default_experiment(task: str) -> str:
    return f"rlx/{task}"


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened config without ``NOT_SETTINGS``: what decides what is learned."""
    from rlx.config import flatten

    out = {k: v for k, v in flatten(config).items() if k not in NOT_SETTINGS}
    out["reward"] = ",".join(config.get("reward") or {})  # a reward without settings flattens to nothing
    return out


def group_id(config: dict[str, Any]) -> str:
    """A stable digest of the settings (``rlx.group``): equal for the seeds of one config."""
    text = json.dumps(settings(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def variant(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``config`` that differ from ``defaults`` (the same components with
    nothing set), in config order; a setting only one of them has counts as differing."""
    mine, base = settings(config), settings(defaults)
    missing = object()
    return {k: v for k, v in mine.items() if base.get(k, missing) != v}


def variant_text(changes: dict[str, Any]) -> str:
    """``objective.loss_type=dr_grpo, run.steps=20`` (the ``rlx.variant`` tag); "defaults"
    when nothing differs."""
    return ", ".join(f"{k}={_show(v)}" for k, v in changes.items()) or "defaults"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _word(key: str, value: Any) -> str:
    """One setting in a run name: a word stands for itself (``dr_grpo``), a number or a
    switch needs its field (``beta=0.1``)."""
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, str) and value and not value.replace(".", "").replace("-", "").isdigit():
        return value.replace("/", "_")[-24:]  # a model path or hub id: its end names it
    return f"{leaf}={_show(value)}"


def run_name(names: dict[str, str], task: str, seed: int, changes: dict[str, Any],
             default_reward: str | None) -> str:
    """``<objective>[-<variant>][-<reward>]-<task>-s<seed>``: the reward is left out when it
    is the environment's default one, the variant when nothing differs; the variant part
    is cut at ``NAME_VARIANT_MAX`` characters (``+N`` says how many settings it left out)."""
    # how long it ran is in the metrics' steps; it would lead every name
    kept = [(k, v) for k, v in changes.items() if k not in ("run.steps", "run.env_steps")]
    # choices first (``dr_grpo``): they say most in the fewest characters
    kept.sort(key=lambda kv: not isinstance(kv[1], str))
    words = [_word(k, v) for k, v in kept]
    part = ""
    for i, word in enumerate(words):
        candidate = f"{part}-{word}" if part else word
        if len(candidate) > NAME_VARIANT_MAX:
            part = f"{part}-+{len(words) - i}" if part else f"+{len(words)}"
            break
        part = candidate
    reward = names.get("reward") or ""
    pieces = [names["objective"], part, "" if reward == (default_reward or "") else reward.replace(",", "+"),
              task, f"s{seed}"]
    return "-".join(p for p in pieces if p)[:250]


class Identity:
    """A run's task, variant, group and default name, from its resolved config."""

    def __init__(self, cfg: Any, registry: Any):
        from rlx.config import compose, resolve

        names = cfg.names
        config = cfg.to_dict()
        env_spec = registry.get("environment", names["env"])
        self.task = task_name(names, cfg.env, env_spec)
        # the same components with nothing set: what "differs from the defaults" means;
        # a field without a default (a prompts file's path) keeps its value there
        raw = compose(flags={"objective": names["objective"], "env": names["env"], "policy": names["policy"],
                             "reward": list(cfg.rewards)})
        for section in ("objective", "env", "policy"):
            raw[section].update(_required(getattr(cfg, section)))
        for rname, rcfg in cfg.rewards.items():
            raw["reward"][rname] = _required(rcfg)
        bare = resolve(raw, registry)
        self.variant = variant(config, bare.to_dict())
        self.group = group_id(config)
        self.name = cfg.run.name or run_name(names, self.task, cfg.run.seed, self.variant,
                                             env_spec.meta.get("default_reward"))

    def tags(self) -> dict[str, str]:
        return {"rlx.task": self.task, "rlx.group": self.group, "rlx.variant": variant_text(self.variant)[:5000]}


def _required(model: Any) -> dict[str, Any]:
    """The values of ``model``'s fields that have no default."""
    fields = type(model).model_fields
    return {k: v for k, v in model.model_dump(mode="json").items() if k in fields and fields[k].is_required()}
