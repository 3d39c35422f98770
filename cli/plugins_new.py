"""``rlx plugins new NAME --kind KIND``: write an installable plugin package that works.

The package is rendered from ``rlx/cli/templates`` (``common/`` plus one folder per
kind). A template file ends in ``.tmpl``; a path segment ``MODULE`` becomes the Python
module name and ``dot-`` at the start of a file name becomes ``.``. In the text,
``{{name}}`` is the plugin's name (distribution, entry point and component name),
``{{module}}`` its import name, ``{{Class}}`` its CamelCase class prefix, ``{{kind}}``
and ``{{summary}}`` what it provides, and ``{{rlx_version}}`` the rlx version it was
written for.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import typer

TEMPLATES = Path(__file__).parent / "templates"
KINDS = ("objective", "reward", "environment", "policy", "kind")
# what each template registers besides the plugin (family) itself: (component kind, name suffix)
REGISTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "objective": (("objective", ""),),
    "reward": (("reward", ""),),
    "environment": (("environment", ""),),
    "policy": (("policy", ""),),
    "kind": (("kind", ""), ("environment", ""), ("policy", "-softmax"), ("objective", "-pg"), ("reward", "-payout")),
}
SUMMARY = {
    "objective": "REINFORCE with a mean baseline, on text rollouts",
    "reward": "an outcome reward for a keyword in the completion",
    "environment": "a procedural text task (reverse the digits), checkable answers",
    "policy": "a small char-level LM policy in plain torch (no transformers)",
    "kind": "a new kind (guess the number): env, policy, objective, reward",
}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_MAX_NAME = 40

HELP = "\n\n".join([
    "Write a new plugin package NAME that installs and passes its own tests at once.",
    "KIND picks what it provides, each a small working example to edit:",
    "\n".join(f"  {k:<12} {v}" for k, v in SUMMARY.items()),
    "The package (in ./NAME, or --dir PATH) holds pyproject.toml (with the `rlx` entry point), "
    "src/MODULE/__init__.py (registration only: no torch at import), config.py (pydantic, every field with a "
    "default and a description), the component code, README.md and tests/ that use rlx.testing. Then:",
    "  pip install -e ./NAME\n  pytest ./NAME/tests\n  rlx plugins show NAME",
    "NAME (letters, digits, '-' and '_', starting with a letter) names the distribution, the entry point and "
    "the component; in lower case with '-' as '_' it is the module.",
])


def new(name: str = typer.Argument(..., metavar="NAME", help="Plugin name: letters, digits, '-', '_', starting with a letter."),
        kind: str = typer.Option(..., "--kind", "-k", metavar="KIND",
                                 help="What the plugin provides: " + ", ".join(KINDS) + "."),
        folder: Path | None = typer.Option(None, "--dir", "-d", metavar="PATH",
                                           help="Folder to write (default ./NAME); must not exist or be empty.")
        ) -> None:
    import os

    target = folder if folder is not None else Path(name)
    files = scaffold(name, kind, target)
    shown = str(target) if target.is_absolute() or len(target.parts) > 1 else os.path.join(".", target)
    typer.echo(f"wrote {kind} plugin '{name}' ({SUMMARY[kind]}) in {shown}:")
    for f in files:
        typer.echo(f"  {f.relative_to(target).as_posix()}")
    typer.echo(f"next:\n  pip install -e {shown}\n  pytest {os.path.join(shown, 'tests')}\n  rlx plugins show {name}")


new.__doc__ = HELP


def names_for(name: str, kind: str) -> dict[str, str]:
    """The placeholders of the templates for plugin ``name``."""
    module = name.lower().replace("-", "_")
    klass = "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]+", name) if part)
    from rlx import __version__

    return {"name": name, "module": module, "Class": klass, "rlx_version": __version__, "kind": kind,
            "summary": SUMMARY[kind]}


def check(name: str, kind: str, target: Path) -> dict[str, str]:
    """Raise ``UsageError`` (one line) unless ``name``, ``kind`` and ``target`` can be used."""
    import importlib.util

    from rlx.errors import UsageError

    if kind not in KINDS:
        raise UsageError(f"unknown --kind '{kind}'; choose one of: {', '.join(KINDS)}")
    if not _NAME.fullmatch(name) or name[-1] in "-_" or "--" in name or len(name) > _MAX_NAME:
        raise UsageError(f"plugin name '{name}' is not valid: use letters, digits, '-' and '_', starting with a "
                         f"letter and ending with a letter or digit, at most {_MAX_NAME} characters (e.g. my-reward)")
    subs = names_for(name, kind)
    module = subs["module"]
    if keyword.iskeyword(module) or module in ("rlx", "test", "tests", "src"):
        raise UsageError(f"plugin name '{name}' gives the module name '{module}', which is reserved; choose another")
    found = importlib.util.find_spec(module)
    if found is not None and found.origin is not None:  # a folder in the working directory is no clash
        raise UsageError(f"plugin name '{name}': a module '{module}' is already importable here; choose another name")
    from rlx.registry.cache import summary

    rows = summary().rows()
    families = {r["family"] for r in rows}
    if name in families:
        raise UsageError(f"plugin name '{name}' is already used by an installed plugin; see `rlx plugins list` and "
                         "choose another")
    taken = {(r["kind"], r["name"]): r["family"] for r in rows}
    for component, suffix in REGISTERS[kind]:
        if (component, name + suffix) in taken:
            raise UsageError(f"plugin name '{name}': {component} '{name + suffix}' is already registered by plugin "
                             f"'{taken[component, name + suffix]}'; choose another name")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        what = "a folder that is not empty" if target.is_dir() else "a file"
        raise UsageError(f"'{target}' is {what}; write the plugin into a new or empty folder with --dir PATH")
    return subs


def render(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.search(r"\{\{\w+\}\}", text)
    if left:  # a template typo: fail here, not in the user's package
        raise AssertionError(f"unknown placeholder {left.group(0)}")
    return text


def scaffold(name: str, kind: str, target: Path) -> list[Path]:
    """Write the package for ``name`` of ``kind`` into ``target``; the files written."""
    subs = check(name, kind, target)
    files: dict[Path, str] = {}  # rendered first: a template error leaves nothing half-written
    for folder in (TEMPLATES / "common", TEMPLATES / kind):
        for src in sorted(folder.rglob("*.tmpl")):
            parts = [subs["module"] if p == "MODULE" else p for p in src.relative_to(folder).parts]
            parts[-1] = parts[-1][: -len(".tmpl")].replace("MODULE", subs["module"])
            if parts[-1].startswith("dot-"):
                parts[-1] = "." + parts[-1][4:]
            files[target.joinpath(*parts)] = render(src.read_text(encoding="utf-8"), subs)
    for dest, text in files.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
    return list(files)
