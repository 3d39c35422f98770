"""A sweep's spec: a base run config, the cells to vary it by, the seeds, and where to run.

Written as TOML (``rlx sweep SPEC.toml``) or as flags (``rlx sweep --objective grpo,rloo
--seeds 0-4 --grid objective.beta=0,0.04 -- <rlx run flags>``); both become a
``SweepSpec``. A spec file::

    name = "grpo-loss-types"
    seeds = 5                        # seeds 0..4; or [0, 3, 7]; or "0-4"
    metric = "eval/accuracy"         # what rlx compare ranks by (default: the runs' headline)

    [base]                           # any rlx run config: the sections of --config
    objective = "grpo"
    run = { steps = 20 }             # or base = "run.toml", a file beside the spec

    [axes]                           # every combination of these values
    "objective.loss_type" = ["grpo", "dr_grpo", "dapo"]

    [[cells]]                        # and/or cells listed one by one (crossed with the axes)
    label = "ensemble-min"
    reward = "ensemble"
    "reward.ensemble.aggregation" = "min"

    [launcher]                       # where runs go: the launcher's name and settings
    name = "local"
    max_parallel = 2

A key is any config key, dotted (``objective.beta``, ``run.steps``,
``reward.prm.refinement``), or a component choice (``objective``, ``env``, ``policy``:
a name; ``reward``: a name or a list of names), which replaces that section as the flag
of the same name does. Every cell is validated against the plugins' config models before
anything starts (``expand``); seeds are the controller's (never an axis), the same seeds
in every cell, so cells are compared on common seeds.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlx.config import SEED_MAX, _merge, _normalize, compose, parse_value, resolve
from rlx.errors import ConfigError, UsageError

COMPONENT_KEYS = ("objective", "env", "policy", "reward")
# settings the controller owns for every run: the seed, the experiment the parent lives in,
# the run's name (cell and seed)
_OWNED = {"run.seed": "seeds are the sweep's: set them with seeds = ... (or --seeds)",
          "run.experiment": "a sweep's runs share its experiment: set experiment = ... at the top of the spec",
          "run.name": "a sweep names each run after its cell and seed; give a cell a label = ... instead"}
_TOP = {"name", "experiment", "seeds", "metric", "aggregate", "base", "axes", "cells", "launcher", "max_parallel"}
MAX_RUNS = 10_000


@dataclass
class Cell:
    """One combination of settings: ``values`` (dotted key -> value, in spec order) and its label."""

    label: str
    values: dict[str, Any]


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]  # the composed raw config (defaults < base file < base table < flags)
    cells: list[Cell]
    seeds: list[int]
    experiment: str = ""
    metric: str | None = None
    aggregate: str = "final"
    launcher: str | None = None
    launcher_settings: dict[str, Any] = field(default_factory=dict)
    max_parallel: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base, "cells": [[c.label, c.values] for c in self.cells],
                "seeds": self.seeds, "experiment": self.experiment, "metric": self.metric,
                "aggregate": self.aggregate, "launcher": self.launcher, "launcher_settings": self.launcher_settings,
                "max_parallel": self.max_parallel}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SweepSpec":
        return cls(d["name"], d["base"], [Cell(label, values) for label, values in d["cells"]], d["seeds"],
                   d.get("experiment", ""), d.get("metric"), d.get("aggregate", "final"), d.get("launcher"),
                   d.get("launcher_settings") or {}, d.get("max_parallel"))


@dataclass
class PlannedRun:
    """A run the sweep owns: its cell and seed, the run id the controller gave it, and its config."""

    run_id: str
    cell: str
    values: dict[str, Any]
    seed: int
    config: dict[str, Any] = field(default_factory=dict)  # resolved, what `rlx run --config` gets
    failed: str = ""  # why it failed before it had a catalog row (its plugin, its store): kept in the plan

    @property
    def label(self) -> str:
        return f"{self.cell} s{self.seed}"

    def to_json(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "cell": self.cell, "values": self.values, "seed": self.seed}
        return {**out, "failed": self.failed} if self.failed else out


# -- reading -----------------------------------------------------------------------------
def parse_seeds(value: Any, origin: str) -> list[int]:
    """``5`` (seeds 0..4), ``"0-4"``, ``"0,3,7"`` or ``[0, 3, 7]``: distinct seeds in SEED range."""
    seeds: list[int]
    if isinstance(value, bool):
        raise UsageError(f"{origin}: seeds must be a count, a list or a range like \"0-4\", got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise UsageError(f"{origin}: seeds = {value}: a sweep needs at least one seed (e.g. seeds = 5)")
        seeds = list(range(value))
    elif isinstance(value, str) and value.strip().isdigit():  # "5" on a command line: a count, as seeds = 5
        return parse_seeds(int(value.strip()), origin)
    elif isinstance(value, str):
        text = value.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise UsageError(f"{origin}: seed range '{text}' runs backwards; write it low-high, e.g. 0-4")
            seeds = list(range(lo, hi + 1))
        elif re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
            seeds = [int(x) for x in text.split(",")]
        else:
            raise UsageError(f"{origin}: seeds '{value}' is not a count, a range like 0-4 or a list like 0,3,7")
    elif isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        seeds = list(value)
    else:
        raise UsageError(f"{origin}: seeds must be a count, a range like \"0-4\" or a non-empty list of "
                         f"integers, got {value!r}")
    dup = next((s for s in seeds if seeds.count(s) > 1), None)
    if dup is not None:
        raise UsageError(f"{origin}: seed {dup} is listed twice; each seed runs once per cell")
    bad = next((s for s in seeds if not 0 <= s <= SEED_MAX), None)
    if bad is not None:
        raise UsageError(f"{origin}: seed {bad} is outside 0..{SEED_MAX}, the range numpy and gymnasium seed with")
    return seeds


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A cell's settings as dotted keys; a component choice (``reward = "prm"``) stays whole."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in COMPONENT_KEYS:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _check_key(key: str, origin: str) -> None:
    if not key or any(not p for p in key.split(".")):
        raise UsageError(f"{origin}: '{key}' is not a config key; write it dotted, e.g. objective.beta")
    if key in _OWNED:
        raise UsageError(f"{origin}: '{key}' cannot vary in a sweep: {_OWNED[key]}")
    section = key.split(".")[0]
    if section == "launcher":
        raise UsageError(f"{origin}: '{key}' is a launcher setting, the same for every run; put it in [launcher]")
    from rlx.config import DEFAULTS

    if section not in DEFAULTS:
        raise UsageError(f"{origin}: '{key}' is not in a config section; sections: {', '.join(DEFAULTS)}")


def _label(values: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return ",".join(map(str, v)) if isinstance(v, list) else str(v)

    return " ".join(f"{k}={show(v)}" for k, v in values.items()) or "base"


def build_cells(axes: dict[str, list[Any]], listed: list[dict[str, Any]], origin: str) -> list[Cell]:
    """The listed cells (or one empty cell) crossed with every combination of the axes."""
    for key, vals in axes.items():
        _check_key(key, f"{origin}: axis")
        if not isinstance(vals, list) or not vals:
            raise UsageError(f"{origin}: axis '{key}' needs a non-empty list of values, e.g. \"{key}\" = [a, b]")
        dup = next((json.dumps(v) for v in vals if vals.count(v) > 1), None)
        if dup is not None:
            raise UsageError(f"{origin}: axis '{key}' lists {dup} twice")
    base_cells: list[Cell] = []
    for i, entry in enumerate(listed or [{}]):
        if not isinstance(entry, dict):
            raise UsageError(f"{origin}: cells[{i}] must be a table of settings, got {type(entry).__name__}")
        entry = dict(entry)
        label = entry.pop("label", None)
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise UsageError(f"{origin}: cells[{i}].label must be a non-empty string")
        values = _flat(entry)
        for key in values:
            _check_key(key, f"{origin}: cells[{i}]")
        clash = next((k for k in values if k in axes), None)
        if clash is not None:
            raise UsageError(f"{origin}: '{clash}' is both an axis and set in cells[{i}]; keep one")
        base_cells.append(Cell(label or "", values))
    cells: list[Cell] = []
    keys = list(axes)
    for listed_cell in base_cells:
        for combo in itertools.product(*(axes[k] for k in keys)):
            grid = dict(zip(keys, combo))
            values = {**listed_cell.values, **grid}
            label = " ".join(x for x in (listed_cell.label, _label(grid) if grid else "") if x) or _label(values)
            cells.append(Cell(label, values))
    labels = [c.label for c in cells]
    dup = next((lab for lab in labels if labels.count(lab) > 1), None)
    if dup is not None:
        raise UsageError(f"{origin}: two cells are both '{dup}'; give each listed cell its own label")
    return cells


def load_spec(path: Path) -> SweepSpec:
    """A TOML spec file, validated for shape (``expand`` validates the configs)."""
    import tomllib

    origin = str(path)
    if path.is_dir() or not path.is_file():
        raise UsageError(f"sweep spec '{path}' does not exist; pass a TOML file (see examples/sweeps/)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read sweep spec '{path}': {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"sweep spec '{path}' is not valid TOML: {exc}; fix the syntax") from None
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise UsageError(f"{origin}: unknown key '{unknown[0]}'; a sweep spec has: {', '.join(sorted(_TOP))}")
    base_raw = data.get("base", {})
    base_file = None
    if isinstance(base_raw, str):
        base_file, base_raw = (path.parent / base_raw), {}
    elif not isinstance(base_raw, dict):
        raise UsageError(f"{origin}: base must be a table of run config sections or a file name, "
                         f"got {type(base_raw).__name__}")
    base = compose(base_file, None, None)
    base = _merge(base, _normalize(base_raw, f"{origin} [base]"))
    axes = data.get("axes", {})
    if not isinstance(axes, dict):
        raise UsageError(f"{origin}: axes must be a table of \"key\" = [values]")
    cells_raw = data.get("cells", [])
    if not isinstance(cells_raw, list):
        raise UsageError(f"{origin}: cells must be an array of tables ([[cells]])")
    launcher = data.get("launcher", {})
    if isinstance(launcher, str):
        launcher = {"name": launcher}
    if not isinstance(launcher, dict):
        raise UsageError(f"{origin}: launcher must be a table ([launcher] name = \"local\") or a name")
    launcher = dict(launcher)
    max_parallel = launcher.pop("max_parallel", data.get("max_parallel"))
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{origin}: name must be a non-empty string")
    return SweepSpec(name=name, base=base, cells=build_cells(_flat_axes(axes), cells_raw, origin),
                     seeds=parse_seeds(data.get("seeds", 1), origin), experiment=str(data.get("experiment", "")),
                     metric=data.get("metric"), aggregate=str(data.get("aggregate", "final")),
                     launcher=launcher.pop("name", None), launcher_settings=launcher,
                     max_parallel=_max_parallel(max_parallel, origin))


def _flat_axes(axes: dict[str, Any]) -> dict[str, Any]:
    """``[axes] objective.beta = [...]`` (a dotted, unquoted key: nested tables) or ``"objective.beta" = [...]``."""
    out: dict[str, Any] = {}
    for k, v in axes.items():
        if isinstance(v, dict) and k not in COMPONENT_KEYS:
            out.update({f"{k}.{kk}": vv for kk, vv in _flat_axes(v).items()})
        else:
            out[k] = v
    return out


def _max_parallel(value: Any, origin: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{origin}: max_parallel must be a whole number of runs, 1 or more, got {value!r}")
    return value


def split_values(text: str) -> list[Any]:
    """``0,0.04`` -> [0, 0.04]; commas inside brackets or quotes stay (``[1,2],[3]``)."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [parse_value(p.strip()) for p in parts]


def from_flags(name: str | None, base: dict[str, Any], choices: dict[str, str | None], grid: list[str],
               seeds: str | None, experiment: str | None) -> SweepSpec:
    """``rlx sweep --objective a,b --grid key=v1,v2 --seeds 0-4 -- <run flags>``."""
    axes: dict[str, list[Any]] = {}
    for key, given in choices.items():
        if given:
            names = [n.strip() for n in given.split(",")]
            if any(not n for n in names):
                raise UsageError(f"--{key} '{given}': an empty name in the list; write names separated by commas")
            if len(names) > 1:
                axes[key] = names
            else:  # one name: part of the base, as the run flag would make it
                base = cell_config(base, {key: names[0]})
    for item in grid:
        key, sep, vals = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--grid '{item}' is not of the form key=v1,v2 (e.g. --grid objective.beta=0,0.04)")
        if key in axes:
            raise UsageError(f"--grid {key} is given twice; list all its values in one --grid {key}=v1,v2")
        axes[key] = split_values(vals)
    name = name or "-".join(k.split(".")[-1] for k in axes) or "sweep"
    return SweepSpec(name=name, base=base, cells=build_cells(axes, [], "rlx sweep"),
                     seeds=parse_seeds(seeds if seeds is not None else 1, "--seeds"), experiment=experiment or "")


# -- expanding -----------------------------------------------------------------------------
def cell_config(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` with a cell's settings applied: component choices first (as the flags
    --objective/--env/--policy/--reward do), then dotted keys (as --set does)."""
    cfg = copy.deepcopy(base)
    for key in ("objective", "env", "policy"):
        if key in values:
            name = values[key]
            if not isinstance(name, str):
                raise UsageError(f"'{key}' takes a component name, got {name!r}")
            if cfg.get(key, {}).get("name") != name:
                cfg[key] = {"name": name}
    if "reward" in values:
        chosen = values["reward"]
        names = [chosen] if isinstance(chosen, str) else chosen
        if isinstance(chosen, dict):
            cfg["reward"] = copy.deepcopy(chosen)
        elif isinstance(names, list) and all(isinstance(n, str) for n in names):
            cfg["reward"] = {n: cfg.get("reward", {}).get(n, {}) for n in names}
        else:
            raise UsageError(f"'reward' takes a name or a list of names, got {chosen!r}")
    for key, value in values.items():
        if key in COMPONENT_KEYS:
            continue
        node: dict[str, Any] = {}
        cur = node
        parts = key.split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
        cfg = _merge(cfg, _normalize(node, key))
    return cfg


def expand(spec: SweepSpec, registry: Any, new_id: Any) -> list[PlannedRun]:
    """Every cell x seed as a planned run with a validated config, cells in spec order and
    seeds inside them. Any cell that does not validate stops here, before anything starts."""
    total = len(spec.cells) * len(spec.seeds)
    if total > MAX_RUNS:
        raise UsageError(f"the sweep has {total} runs ({len(spec.cells)} cells x {len(spec.seeds)} seeds), over "
                         f"the limit of {MAX_RUNS}; narrow the axes or split the sweep")
    plan: list[PlannedRun] = []
    # every run in the experiment of the parent, so the UI nests them: the spec's, else the
    # default one (rlx/<task>) of the first cell
    experiment = spec.experiment
    for cell in spec.cells:
        try:
            raw = cell_config(spec.base, cell.values)
            raw.setdefault("run", {})
            if experiment:
                raw["run"]["experiment"] = experiment
            raw["run"]["seed"] = spec.seeds[0]
            cfg = resolve(raw, registry)
            experiment = cfg.run.experiment
        except UsageError as exc:
            where = f"cell '{cell.label}'" if cell.label != "base" else "the base config"
            raise type(exc)(f"sweep {where}: {exc}") from None
        for seed in spec.seeds:
            one = cfg.to_dict()
            one["run"]["seed"] = seed
            one["run"]["name"] = f"{cell.label} s{seed}"[:250]
            plan.append(PlannedRun(new_id(), cell.label, cell.values, seed, one))
    return plan
