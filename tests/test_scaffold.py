"""``rlx plugins new``: every ``--kind`` writes a package that installs (a real build, with
``pip install --no-deps --no-build-isolation --target``) and passes its own tests, which
use ``rlx.testing``; bad input fails with one line and exit code 2, writing nothing.

Each package's tests run as its author would run them, ``python -m pytest <pkg>/tests``
from the package's folder, in a subprocess with the target folder on PYTHONPATH (so rlx
finds the entry points as after a normal install); their outcomes are read from a JUnit
report. The generated tests are small (tiny LM, two steps): the module takes about half
a minute on two idle cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from _cli import cli_env, rlx

KINDS = ("objective", "reward", "environment", "policy", "kind")
# what each package registers (``rlx.cli.plugins_new.REGISTERS``), for NAME = scaf-<kind>
COMPONENTS = {"objective": [("objective", "")], "reward": [("reward", "")], "environment": [("environment", "")],
              "policy": [("policy", "")], "kind": [("kind", ""), ("environment", ""), ("policy", "-softmax"),
                                                   ("objective", "-pg"), ("reward", "-payout")]}


def _name(kind: str) -> str:
    return f"scaf-{kind}"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """One package per kind, written by the CLI (the reward one into ./NAME, the default)."""
    root = tmp_path_factory.mktemp("scaffold")
    home = root / "home"
    home.mkdir()
    dirs = {}
    for kind in KINDS:
        folder = home / _name(kind) if kind == "reward" else root / kind
        extra = [] if kind == "reward" else ["--dir", str(folder)]
        proc = rlx("plugins", "new", _name(kind), "--kind", kind, *extra, home=home)  # cwd: home
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"wrote {kind} plugin '{_name(kind)}'" in proc.stdout
        dirs[kind] = folder
    return dirs


@pytest.fixture(scope="module")
def site(generated, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("scaffold_site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
                           *map(str, generated.values())], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def _own_tests(folder: Path, site: Path, work: Path) -> tuple[dict[str, str], str]:
    """Run a package's tests as its author would (``python -m pytest <pkg>/tests`` from the
    package's folder, with the install on PYTHONPATH): ``{test name: outcome}`` and the output."""
    report = work / "report.xml"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
            str(folder / "tests")]
    if not any(ep.value == "rlx.testing.pytest_plugin" for ep in entry_points(group="pytest11")):
        args[3:3] = ["-p", "rlx.testing.pytest_plugin"]  # an editable install older than the pytest11 entry point
    proc = subprocess.run(args, capture_output=True, text=True, cwd=folder, env=cli_env(work / "home", [site]),
                          timeout=600)
    output = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report.is_file(), output
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        bad = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "?")] = (f"{bad[0].tag}: {bad[0].get('message', '')}\n{bad[0].text or ''}"
                                           if bad else "passed")
    return outcomes, output


@pytest.mark.parametrize("kind", KINDS)
def test_generated_package_passes_its_own_tests(kind, generated, site, tmp_path):
    folder = generated[kind]
    module = _name(kind).replace("-", "_")
    for path in ("pyproject.toml", "README.md", f"src/{module}/__init__.py", f"src/{module}/config.py",
                 f"tests/test_{module}.py"):
        assert (folder / path).is_file(), path
    assert f'{_name(kind)} = "{module}"' in (folder / "pyproject.toml").read_text()
    got, output = _own_tests(folder, site, tmp_path)
    assert "test_conforms" in got, output  # rlx.testing's check_<kind>
    if kind != "reward":  # a short rlx_run: of the objective, on the environment, with the policy, on the kind
        assert ("test_learns" if kind == "kind" else "test_trains") in got, output
    failed = {name: outcome for name, outcome in got.items() if outcome != "passed"}
    assert not failed, "\n".join(f"{name}: {outcome}" for name, outcome in failed.items())


def test_generated_packages_are_listed(site, tmp_path):
    proc = rlx("plugins", "list", "--json", home=tmp_path, paths=[site])
    assert proc.returncode == 0, proc.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(proc.stdout)}
    for kind, components in COMPONENTS.items():
        for component, suffix in components:
            row = rows[component, _name(kind) + suffix]
            assert (row["family"], row["version"], row["status"]) == (_name(kind), "0.1.0", "ok"), row
            assert row["description"]


def test_registration_modules_do_not_import_torch(site, tmp_path):
    code = ("import sys\nfor m in " + repr([_name(k).replace("-", "_") for k in KINDS]) +
            ":\n    __import__(m)\nprint(sorted({'torch', 'transformers', 'mlflow'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env=cli_env(tmp_path, [site]), timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.parametrize("args,words", [
    (["1bad", "--kind", "reward"], "plugin name '1bad' is not valid"),
    (["bad.name", "--kind", "reward"], "plugin name 'bad.name' is not valid"),
    (["good-name", "--kind", "widget"], "unknown --kind 'widget'; choose one of: objective, reward, environment, "
                                        "policy, kind"),
    (["grpo", "--kind", "objective"], "plugin name 'grpo' is already used by an installed plugin"),
    (["json", "--kind", "reward"], "a module 'json' is already importable here"),
    (["good-name", "--kind", "reward", "--dir", "full"], "'full' is a folder that is not empty"),
    (["full", "--kind", "reward"], "'full' is a folder that is not empty; write the plugin into a new or empty"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, words, tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    (work / "full").mkdir(parents=True)
    (work / "full" / "keep.txt").write_text("mine\n")
    home.mkdir()
    proc = rlx("plugins", "new", *args, home=home, cwd=work)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert sorted(p.name for p in work.rglob("*")) == ["full", "keep.txt"]  # nothing written
