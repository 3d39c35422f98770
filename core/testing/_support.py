"""What the suites share: how a failure reads, the checks every component kind runs
(registration stays cheap, the config model is complete), building components the way
the loop does, and comparing and serialising what they return.

Nothing heavy is imported at module level: ``rlx.testing`` is loaded by pytest in every
project that installs rlx, so importing it must not import torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from typing import Any, Iterator

# what a registration module must not import: listing plugins would pay for it
HEAVY = ("torch", "transformers", "mlflow")
# every check's run: small enough that a tiny model collects a batch in well under a second
SMALL: dict[str, dict[str, Any]] = {"run": {"batch_size": 2, "steps": 2, "eval_every": 0},
                                    "generation": {"max_new_tokens": 16}}
# partners (components not under test) are made cheap where their config has the field
PARTNER_SMALL: dict[str, dict[str, Any]] = {"env": {"eval_size": 8, "eval_episodes": 2},
                                            "objective": {"num_generations": 2}}
SECTION_OF = {"objective": "objective", "environment": "env", "policy": "policy"}


class ConformanceError(AssertionError):
    """A component failed a conformance check. The message names the component, the
    check and what to fix; the exception it was raised from, if any, is chained."""


class Subject:
    """The component under test: builds failure messages and records the checks it passed."""

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name
        self.passed: dict[str, None] = {}

    def fail(self, check: str, problem: str, fix: str) -> ConformanceError:
        return ConformanceError(f"{self.kind} '{self.name}' fails check '{check}': {problem}; {fix}")

    @contextlib.contextmanager
    def check(self, name: str, fix: str = "fix the component; the chained traceback shows where") -> Iterator[None]:
        """A block that is one check: any exception in it becomes that check's failure."""
        try:
            yield
        except ConformanceError:
            raise
        except Exception as exc:
            raise self.fail(name, f"raised {line(exc)}", fix) from exc
        self.passed[name] = None

    def checks(self) -> list[str]:
        return list(self.passed)


def line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# -- the registry ------------------------------------------------------------------------

def registry() -> Any:
    from rlx.registry import get_registry

    return get_registry()


def lookup(subject: Subject, reg: Any, kind: str | None = None, name: str | None = None) -> Any:
    """The registration of ``name`` (default: the subject), or a failure saying how to get one."""
    kind, name = kind or subject.kind, name or subject.name
    try:
        return reg.get(kind, name)
    except Exception as exc:
        raise subject.fail("registered", f"{kind} '{name}' cannot be used: {exc}",
                           "install the plugin (pip install -e .) so rlx finds its entry point, and check "
                           "`rlx plugins list`") from None


def partner(value: Any) -> tuple[str | None, dict[str, Any]]:
    """A partner given by name, or as ``(name, config)``."""
    if value is None or isinstance(value, str):
        return value, {}
    name, config = value
    return name, dict(config or {})


# -- registration is cheap ---------------------------------------------------------------

_CHILD = r"""
import importlib, json, sys
heavy, modules = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])
before = {h for h in heavy if h in sys.modules}
where = {}

class Watch:
    # records the first line that imports each heavy package: the message points at it
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in where:
            f = sys._getframe(1)
            while f is not None and (f.f_code.co_filename.startswith("<frozen")
                                     or f.f_code.co_filename.endswith(("importlib/__init__.py", "importlib\\__init__.py"))):
                f = f.f_back
            where[top] = f"{f.f_code.co_filename}:{f.f_lineno}" if f is not None else "?"
        return None

sys.meta_path.insert(0, Watch())
out = {}
for mod in modules:
    try:
        importlib.import_module(mod)
    except BaseException as exc:
        out[mod] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        break
    loaded = sorted(h for h in heavy if h in sys.modules and h not in before)
    out[mod] = {"heavy": loaded, "where": {h: where.get(h, "?") for h in loaded}}
    if loaded:  # later modules would find them loaded already: they get a fresh process
        break
print(json.dumps(out))
"""
_imports: dict[str, dict[str, Any]] = {}
# rlx's own limit on a plugin's import is 30 s (RLX_PLUGIN_TIMEOUT); every plugin's together get more
IMPORT_TIMEOUT_S = 300.0


def heavy_imports(modules: list[str]) -> dict[str, dict[str, Any]]:
    """What importing each module in a fresh interpreter loads of ``HEAVY``. Clean modules
    share one interpreter; one that loads something heavy ends it, and the rest go on in
    a new one. Results are kept for the process (a module is imported once per session)."""
    todo = [m for m in dict.fromkeys(modules) if m not in _imports]
    path = os.pathsep.join(p for p in sys.path if p)  # what this process can import, the child can
    while todo:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(HEAVY), json.dumps(todo)],
                                  capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S,
                                  env={**os.environ, "PYTHONPATH": path})
            got = json.loads(proc.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            got = {m: {"error": f"importing {', '.join(todo)} took over {IMPORT_TIMEOUT_S:g} s"} for m in todo}
        except (IndexError, ValueError):
            got = {todo[0]: {"error": f"the interpreter importing it exited with {proc.returncode}: "
                                      f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}"}}
        _imports.update(got)
        todo = [m for m in todo if m not in _imports]
    return {m: _imports[m] for m in modules}


def registration_module(reg: Any, spec: Any) -> str:
    info = reg.plugins.get(spec.plugin)
    return info.module.split(":")[0].strip() if info is not None else ""


def check_registration(subject: Subject, reg: Any, spec: Any) -> None:
    """Importing the plugin's entry-point module in a fresh interpreter imports none of ``HEAVY``."""
    check = "registration cheap"
    module = registration_module(reg, spec)
    if not module:
        raise subject.fail(check, f"no rlx entry point is known for plugin '{spec.plugin}'",
                           "register the component from a module listed under [project.entry-points.rlx]")
    # every plugin's module in one interpreter first: the common, clean case costs one start
    ok = sorted(i.module.split(":")[0].strip() for i in reg.plugins.values() if i.status == "ok")
    found = heavy_imports([*ok, module] if module not in _imports else [module])[module]
    if "error" in found:
        raise subject.fail(check, f"importing its registration module '{module}' in a fresh interpreter failed: "
                                  f"{found['error']}", "make the entry-point module importable on its own")
    if found["heavy"]:
        where = "; ".join(f"{h} first imported at {w}" for h, w in found["where"].items())
        raise subject.fail(check, f"importing its registration module '{module}' imports {', '.join(found['heavy'])} "
                                  f"({where})", "register by import path (register(name, 'pkg.module:Class', ...)) "
                                                "and import heavy libraries inside the component's module, not in the "
                                                "module the entry point names or the config module it imports")
    subject.passed[check] = None


# -- the config model --------------------------------------------------------------------

def check_config(subject: Subject, spec: Any, given: dict[str, Any]) -> None:
    """Every field has a description, and a default unless the caller passes it (a field
    the user must always set, such as a data file's path), and the defaults validate."""
    from pydantic import ValidationError

    check, model = "config", spec.config
    fields = model.model_fields
    bare = [f for f, info in fields.items() if not (info.description or "").strip()]
    if bare:
        raise subject.fail(check, f"{model.__name__} field(s) {', '.join(bare)} have no description",
                           "add Field(..., description='...') to each: `rlx plugins show` and the docs print them")
    required = [f for f, info in fields.items() if info.is_required()]
    missing = [f for f in required if f not in given]
    if missing:
        raise subject.fail(check, f"{model.__name__} field(s) {', '.join(missing)} have no default, so `rlx run` "
                                  "without --set fails", "give every field a default (None where 'unset' means "
                                                         "something); or, if the user must always set it, pass it "
                                                         "in config= to this check")
    try:
        model.model_validate({f: given[f] for f in required})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "model"
        raise subject.fail(check, f"{model.__name__} does not validate with its defaults ({where}: {err['msg']})",
                           "make the defaults valid together") from None
    subject.passed[check] = None


def validated(subject: Subject, section: str, spec: Any, given: dict[str, Any]) -> Any:
    """``given`` validated by the component's config model, as ``rlx run`` validates it."""
    from rlx.config import validate_section

    with subject.check("config", fix=f"pass settings that {spec.config.__name__} accepts"):
        return validate_section(section, spec.config, dict(given))


# -- building the way the loop does ------------------------------------------------------

def choose_objective(reg: Any, kind: Any, data: str | None = None) -> str | None:
    """An objective that trains on ``kind``: the default objective where it fits, else one
    that trains a policy, by name. ``data``: only objectives of that data mode."""
    fits = [s for s in reg.components["objective"].values() if not s.unavailable and kind.name in s.meta["accepts"]
            and s.meta["data"] in kind.meta["data"] and (data is None or s.meta["data"] == data)]
    fits.sort(key=lambda s: (s.name != kind.meta["default_objective"], not s.meta["default"],
                             s.meta["produces"] != "policy", s.name))
    return fits[0].name if fits else None


def default_kind_name(reg: Any) -> str | None:
    """The kind ``rlx run`` with no names trains on."""
    from rlx.config import _chosen_names

    try:
        return _chosen_names({}, reg)["kind"].name
    except Exception:  # no default objective or environment installed
        return None


def resolve_run(subject: Subject, reg: Any, names: dict[str, Any], own: tuple[str, dict[str, Any]] | None,
                seed: int = 0, partner_config: dict[str, dict[str, Any]] | None = None) -> Any:
    """A resolved config naming ``names`` (objective, env, policy, reward: the rest chosen
    as ``rlx run`` chooses), with the subject's settings ``own`` (section, values) and
    small partners. ``partner_config``: a partner's settings given by the caller."""
    from rlx.config import _merge, compose, resolve

    flags = {k: names.get(k) for k in ("objective", "env", "policy", "reward")}
    flags["seed"] = seed
    raw = _merge(compose(None, flags), SMALL)
    for section, values in (partner_config or {}).items():
        raw = _merge(raw, {section: values})
    if own is not None:
        section, values = own
        raw = _merge(raw, {"reward": {subject.name: values}} if section == "reward" else {section: values})
    fix = "pass compatible partners (env=, policy=, objective=) or settings in config="
    with subject.check("resolve", fix=fix):
        cfg = resolve(raw, reg)
        small: dict[str, Any] = {}
        for section, kind in (("env", "environment"), ("objective", "objective"), ("policy", "policy")):
            if own is not None and own[0] == section:
                continue
            spec = reg.get(kind, cfg.names[section])
            given = raw.get(section) or {}
            values = {k: v for k, v in PARTNER_SMALL.get(section, {}).items()
                      if k in spec.config.model_fields and k not in given}
            if values:
                small[section] = values
        if small:
            cfg = resolve(_merge(raw, small), reg)
    return cfg


def build_parts(subject: Subject, cfg: Any, reg: Any) -> Any:
    """``rlx.loop.build`` after seeding every RNG with the run's seed, as ``train`` does."""
    from accelerate.utils import set_seed

    from rlx.loop import build

    names = ", ".join(f"{k} '{v}'" for k, v in cfg.names.items() if v)
    with subject.check("build", fix=f"fix the failing component, or pass settings it needs in config= ({names})"):
        set_seed(cfg.run.seed)
        parts = build(cfg, reg)
    return parts


def collect(subject: Subject, parts: Any, step: int, check: str = "collect") -> Any:
    """One training batch as the loop gets it (``begin_step`` first)."""
    with subject.check(check):
        parts.objective.begin_step(step, parts.kind.total_steps())
        batch = parts.kind.collect(step)
    return batch


# -- state, values and comparisons -------------------------------------------------------

def json_state(subject: Subject, check: str, state: Any, what: str) -> Any:
    """``state`` as a checkpoint holds it: written with ``json.dumps``, read back with ``json.loads``."""
    if not isinstance(state, dict):
        raise subject.fail(check, f"{what} is a {type(state).__name__}, not a dict", "return a dict from state_dict()")
    try:
        text = json.dumps(state)
    except (TypeError, ValueError) as exc:
        raise subject.fail(check, f"{what} is not JSON-serialisable ({exc})",
                           "checkpoints write it with json.dumps (rlx.checkpoint): keep it to dicts, lists, str, "
                           "numbers, bools and None (tensors as .tolist(), RNGs with rlx.environment.rng_state)") from None
    return json.loads(text)


def difference(a: Any, b: Any, path: str = "") -> str | None:
    """Where ``a`` and ``b`` first differ (``path: a != b``), or None when they are equal.
    Tensors and arrays compare by shape, dtype and value (NaN equal to NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path or 'top level'}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            found = difference(a[k], b[k], f"{path}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path or 'top level'}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    if hasattr(a, "shape") and hasattr(b, "shape"):
        return _array_difference(a, b, path)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    try:
        equal = bool(a == b)
    except Exception:
        equal = False
    return None if equal else f"{path or 'value'}: {_short(a)} != {_short(b)}"


def _array_difference(a: Any, b: Any, path: str) -> str | None:
    import numpy as np

    x = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
    y = b.detach().cpu().numpy() if hasattr(b, "detach") else np.asarray(b)
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"{path or 'tensor'}: shape/dtype {x.shape} {x.dtype} != {y.shape} {y.dtype}"
    same = x == y
    if x.dtype.kind in "fc":
        same |= np.isnan(x) & np.isnan(y)
    if bool(np.all(same)):
        return None
    first = tuple(int(i) for i in np.argwhere(~same)[0])
    return f"{path or 'tensor'}{list(first)}: {x[first]!r} != {y[first]!r}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def batch_difference(a: Any, b: Any) -> str | None:
    return difference(a.tensors, b.tensors, "tensors") or difference(a.meta, b.meta, "meta")


def check_metrics(subject: Subject, check: str, metrics: Any, what: str, prefix: str = "",
                  finite: bool = False) -> None:
    """``metrics``: a dict of ``group/name`` keys (starting with ``prefix``) and values
    ``float()`` reads (0-d tensors included); finite where asked."""
    if not isinstance(metrics, dict):
        raise subject.fail(check, f"{what} returned a {type(metrics).__name__}, not a dict of metrics",
                           "return {'group/name': value, ...}")
    for key, value in metrics.items():
        group, slash, rest = key.partition("/") if isinstance(key, str) else ("", "", "")
        if not (group and slash and rest) or not key.startswith(prefix):
            shape = f"'{prefix}...'" if prefix else "'group/name'"
            raise subject.fail(check, f"{what} returned metric {key!r}, not named {shape}",
                               f"name metrics {shape} (e.g. 'loss/policy'): MLflow and `rlx runs` group them by prefix")
        try:
            number = float(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise subject.fail(check, f"{what} returned metric '{key}' = {_short(value)}, which float() cannot read "
                                      f"({line(exc)})", "return numbers or 0-d tensors") from None
        if finite and not math.isfinite(number):
            raise subject.fail(check, f"{what} returned metric '{key}' = {number}", "return finite values")


def tensor(subject: Subject, check: str, value: Any, what: str) -> Any:
    import torch

    if not isinstance(value, torch.Tensor):
        raise subject.fail(check, f"{what} is a {type(value).__name__}, not a torch.Tensor", "return a torch.Tensor")
    return value
