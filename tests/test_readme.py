"""What README.md shows is what the code does today: every output sample is checked here
and every measured figure is written by benchmarks/readme_figures.py."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from _cli import rlx

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _figures_script():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_figure_span_is_made_by_the_script():
    script = _figures_script()
    spans = [m.group("name") for m in script.SPAN.finditer(README)]
    assert spans, "no measured figures marked in the README"
    assert sorted(set(spans)) == sorted(script.SPANS), "README spans and readme_figures.py disagree"
    assert set(script.SPANS.values()) <= set(script.FIGURES)
    # nothing measured sits outside a span: learning figures are percentages and "N s" timings
    outside = script.SPAN.sub("", README)
    assert not re.search(r"accuracy (?:from|rises from) \d+", outside), "a learning figure outside a fig: span"


def _blocks() -> list[list[str]]:
    """The lines of each fenced code block."""
    blocks, current = [], None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _samples() -> list[tuple[list[str], str]]:
    """``$ rlx ...`` lines of the README's console blocks and the output shown under each."""
    out = []
    for lines in _blocks():
        for i, line in enumerate(lines):
            if line.startswith("$ rlx "):
                shown = []
                for nxt in lines[i + 1:]:
                    if nxt.startswith("$ "):
                        break
                    shown.append(nxt)
                out.append((line[len("$ rlx "):].split(), "\n".join(shown).strip()))
    return out


def test_console_samples_are_what_the_cli_prints(tmp_path):
    samples = _samples()
    assert len(samples) >= 2
    for args, shown in samples:
        proc = rlx(*args, home=tmp_path)
        printed = (proc.stdout + proc.stderr).strip()
        assert printed == shown, f"README shows for `rlx {' '.join(args)}`:\n{shown}\nthe CLI prints:\n{printed}"


def test_progress_bar_matches_the_readme_description():
    from io import StringIO

    from rich.console import Console

    from rlx.loop import _Progress

    shown = re.search(r"live bar \(`(step .*?)`\)", README.replace("\n", " "), re.S)
    assert shown, "the README no longer describes the bar"
    pattern = re.sub(r"\d+\.\d+", r"\\d+\\.\\d+", re.escape(shown.group(1)))
    pattern = pattern.replace(r"87/150", r"\d+/150").replace("━━━━", ".*?").replace(r"0:00:42", r"[\d:-]+")
    bar = _Progress(150, enabled=True)
    bar.update(87, {"reward/mean": 1.812, "kl/ref": 0.0301, "perf/step_s": 0.66})
    bar.eval(87, "eval/accuracy", 0.543)
    rendered = Console(file=StringIO(), width=200, color_system=None)
    with rendered.capture() as cap:
        rendered.print(bar.bar.make_tasks_table(bar.bar.tasks))
    text = " ".join(cap.get().split())
    assert re.fullmatch(pattern.replace(r"\ ", r"\s+"), text), (pattern, text)


def test_dry_run_fed_back_with_config_recreates_the_run(tmp_path):
    """The README: the --dry-run JSON fed back with --config re-creates the run."""
    first = rlx("run", "--objective", "grpo", "--reward", "prm", "--seed", "3", "--set", "objective.beta=0.02",
                "--dry-run", home=tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "run.json").write_text(first.stdout)
    again = rlx("run", "--config", str(tmp_path / "run.json"), "--dry-run", home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == json.loads(first.stdout)
