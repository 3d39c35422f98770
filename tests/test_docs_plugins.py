"""docs/plugins.md runs as written.

Every ```python block is executed: a block whose first line is ``# file: <project>/<path>``
(``(continued)`` appends to a file begun earlier) is written out as a file of one of the
page's example projects, which are installed with ``pip install --target`` into a
temporary folder; every other block is exec'd with the projects' sources importable
(installed nowhere, as the page's in-process testing examples assume). Shell blocks
marked ``<!-- test: run -->`` are run line by line against the installed projects with a
private RLX_HOME (tracking off); each ``rlx run`` must end FINISHED.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
FILE = re.compile(r"^# file: (?P<path>\S+)(?P<continued> \(continued\))?\s*$")
RUN_MARK = "<!-- test: run -->"
CLEAN = ("RLX_DISABLE_PLUGINS", "MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_DEBUG", "RLX_TRACKING")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # where the code starts in the page (1-based)
    run: bool  # preceded by <!-- test: run -->

    @property
    def file(self) -> tuple[str, bool] | None:
        """(path, continued) of a ``# file:`` block."""
        first = self.code.split("\n", 1)[0]
        m = FILE.match(first)
        return (m["path"], bool(m["continued"])) if m else None


def blocks(text: str) -> list[Block]:
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence[1], i + 1
        j = start
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        assert j < len(lines), f"docs/plugins.md:{i + 1}: unclosed code block"
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        out.append(Block(lang, "\n".join(lines[start:j]) + "\n", start + 1, before == RUN_MARK))
        i = j + 1
    return out


BLOCKS = blocks(DOC.read_text(encoding="utf-8"))


def files() -> dict[str, str]:
    """The example projects' files, assembled from the ``# file:`` blocks in page order."""
    out: dict[str, str] = {}
    for b in BLOCKS:
        if b.file is None:
            continue
        path, continued = b.file
        body = b.code.split("\n", 1)[1]
        if continued:
            assert path in out, f"docs/plugins.md:{b.line}: '{path}' is continued before it begins"
            out[path] += "\n\n" + body
        else:
            assert path not in out, f"docs/plugins.md:{b.line}: '{path}' begins twice; mark the later '(continued)'"
            out[path] = body
    return out


def commands(block: Block) -> list[str]:
    """A shell block's commands, ``\\`` continuations joined."""
    out, current = [], ""
    for line in block.code.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip() and not current.strip().startswith("#"):
            out.append(current.strip())
        current = ""
    return out


def test_blocks_are_well_formed():
    python = [b for b in BLOCKS if b.lang == "python"]
    assert len(python) >= 15
    for b in python:
        compile(b.code, f"docs/plugins.md:{b.line}", "exec")
    for b in BLOCKS:
        if b.lang == "toml":
            tomllib.loads(b.code)
        if b.run:
            assert b.lang == "bash", f"docs/plugins.md:{b.line}: only bash blocks can be run"
        assert b.file is None or b.lang in ("python", "toml"), f"docs/plugins.md:{b.line}"
    got = files()
    projects = {p.split("/", 1)[0] for p in got}
    assert projects == {"my-rlx-plugin", "rlx-contextual"}
    assert all(f"{p}/pyproject.toml" in got for p in projects)


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> Path:
    """The page's projects, written out under ``src/``."""
    src = tmp_path_factory.mktemp("doc_projects")
    for path, body in files().items():
        target = src / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    return src


@pytest.fixture(scope="module")
def site(projects, tmp_path_factory) -> Path:
    """Both projects installed, through their own pyproject.toml, into a private folder."""
    target = tmp_path_factory.mktemp("doc_site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target),
         str(projects / "my-rlx-plugin"), str(projects / "rlx-contextual")],
        capture_output=True, text=True, timeout=300, cwd=projects)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for dist in ("my_rlx_plugin-0.1.0", "rlx_contextual-0.1.0"):
        assert (target / f"{dist}.dist-info" / "entry_points.txt").is_file()
    return target


def _env(home: Path, pythonpath: list[Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update(RLX_HOME=str(home), RLX_TRACKING="off",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([*map(str, pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.update(extra)
    return env


_RUNNER = textwrap.dedent("""
    import json, sys, traceback
    failures = []
    for line, code in json.load(open(sys.argv[1])):
        try:
            exec(compile(code, f"docs/plugins.md:{line}", "exec"), {"__name__": "__docs_block__"})
        except BaseException:
            failures.append(f"docs/plugins.md:{line}:\\n" + traceback.format_exc())
    print("\\n".join(failures))
    sys.exit(1 if failures else 0)
""")


def test_standalone_python_blocks_run(projects, tmp_path):
    """Blocks without ``# file:``, exec'd one by one in a fresh namespace, with the
    projects importable from source but not installed."""
    standalone = [[b.line, b.code] for b in BLOCKS if b.lang == "python" and b.file is None]
    assert standalone
    (tmp_path / "blocks.json").write_text(json.dumps(standalone))
    (tmp_path / "runner.py").write_text(_RUNNER)
    proc = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_env(tmp_path / "home", [projects / "my-rlx-plugin", projects / "rlx-contextual"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _check(cmd: str, proc: subprocess.CompletedProcess) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}:\n{out}"
    words = shlex.split(cmd, comments=True)
    if words[:2] != ["rlx", "run"]:
        return
    if "--dry-run" in words:
        # the comment after the command says what the registrations choose: "env arithmetic, policy tiny"
        cfg = json.loads(proc.stdout)
        expected = cmd.partition("#")[2]
        assert expected.strip(), f"`{cmd}`: say in a comment what it resolves to"
        for pair in expected.split(","):
            section, value = pair.split()
            got = sorted(cfg["reward"]) if section == "reward" else [cfg[section]["name"]]
            assert value in got, f"`{cmd}` resolves {section} to {got}, the page says {value}:\n{out}"
        return
    assert " FINISHED: " in proc.stdout, f"`{cmd}` did not finish:\n{out}"
    if "plugins.mine.stop_at" in cmd:
        assert "stopped early by plugin 'mine'" in proc.stdout, out
        assert "[mine] run " in proc.stdout and " ended FINISHED" in proc.stdout, out


def test_shell_blocks_run(site, projects, tmp_path):
    """The marked shell blocks, in the folder that holds the projects, against their
    installed copies; training runs and test suites two at a time, the rest one after
    another."""
    cmds = [c for b in BLOCKS if b.run for c in commands(b)]
    assert any(c.startswith("rlx run --objective mean-baseline") and "--dry-run" not in c for c in cmds)
    assert any(c.startswith("rlx run --objective contextual-pg") for c in cmds)
    home = tmp_path / "home"
    env = _env(home, [site])

    def run(cmd: str) -> tuple[str, subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600, cwd=projects, env=env)
        return cmd, proc, time.monotonic() - t0

    training = [c for c in cmds if (c.startswith("rlx run") and "--dry-run" not in c) or c.startswith("pytest")]
    rest = [c for c in cmds if c not in training]
    results = [run(rest[0])] if rest else []  # the first call creates the home and the plugin cache
    with ThreadPoolExecutor(2) as pool:
        results += list(pool.map(run, training))
    results += [run(c) for c in rest[1:]]
    for cmd, proc, _ in results:
        _check(cmd, proc)
    samples = next(p for c, p, _ in results if c.startswith("rlx sums-sample"))
    assert [line[:2] for line in samples.stdout.split()] == ["Q:", "Q:"], samples.stdout
