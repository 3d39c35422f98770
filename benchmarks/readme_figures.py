"""Measure the learning figures the README states, and write them into it.

Every figure in README.md that comes from a run sits between ``<!-- fig:NAME -->`` and
``<!-- /fig -->``; this script reruns the documented commands, on this machine with the
code and dependencies installed, and replaces each span with what it measured (with
``--write``; without it, it prints them). ``tests/test_readme.py`` checks that every span
in the README is one this script makes, and that the README's error samples are what
the CLI prints today.

    python benchmarks/readme_figures.py                  # all figures, printed (~25 min on 2 cores)
    python benchmarks/readme_figures.py --only cartpole --write
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SPAN = re.compile(r"(<!-- fig:(?P<name>[\w-]+) -->)(?P<body>.*?)(<!-- /fig -->)", re.S)


def _rlx(home: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RLX_CATALOG_URL")}
    env["RLX_HOME"] = str(home)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rlx.cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=home)
    if proc.returncode != 0:
        raise SystemExit(f"`rlx {' '.join(args)}` failed:\n{proc.stderr}")
    return proc, time.perf_counter() - t0


def _history(home: Path, key: str) -> list[tuple[int, float]]:
    """``key``'s (step, value) history in the newest run of ``home``."""
    from mlflow.tracking import MlflowClient

    out = subprocess.run([sys.executable, "-m", "rlx.cli.main", "runs", "list", "--json"], capture_output=True,
                         text=True, env=dict(os.environ, RLX_HOME=str(home)), check=True).stdout
    run = json.loads(out)[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    return sorted((m.step, m.value) for m in client.get_metric_history(run["mlflow_run_id"], key))


def _pct(values: list[float]) -> str:
    lo, hi = round(100 * min(values)), round(100 * max(values))
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def headline() -> dict[str, str]:
    """`rlx run --objective grpo --reward prm`, seeds 0-2: the sample output and the range."""
    starts, ends, times, sample = [], [], [], ""
    for seed in (0, 1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            proc, dt = _rlx(home, "run", "--objective", "grpo", "--reward", "prm", "--seed", str(seed))
            acc = _history(home, "eval/accuracy")
            starts.append(acc[0][1])
            ends.append(acc[-1][1])
            times.append(dt)
            print(f"  headline seed {seed}: eval/accuracy {acc[0][1]:.4f} -> {acc[-1][1]:.4f} ({dt:.0f} s)", flush=True)
            if seed == 0:  # what a user sees (stderr's eval lines, then the summary), with ~/.rlx paths
                lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("step ")] + proc.stdout.splitlines()
                sample = "\n".join(lines).replace(f"sqlite:///{home}/", "sqlite:///$HOME/.rlx/").replace(
                    str(home), "~/.rlx")
    return {"headline-sample": f"\n```\n{sample}\n```\n",
            "headline-range": f"rises from {_pct(starts)} to {_pct(ends)} (seeds 0, 1, 2); on 2 CPU cores the "
                              f"whole run takes about {round(statistics.median(times))} s"}


def cartpole() -> dict[str, str]:
    """The README's CartPole command with the defaults, seeds 0-4: when each first reaches 475."""
    reached, ends, times = [], [], []
    for seed in range(5):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            _, dt = _rlx(home, "run", "--objective", "ppo", "--env", "gym", "--policy", "mlp", "--set",
                         "env.id=CartPole-v1", "--seed", str(seed), "--no-progress")
            ret = dict(_history(home, "eval/return"))
            env_steps = dict(_history(home, "env/steps"))
            first = next((env_steps[s] for s, v in sorted(ret.items()) if v >= 475 and s in env_steps), None)
            reached.append(first)
            ends.append(ret[max(ret)])
            times.append(dt)
    if any(r is None for r in reached):
        text = (f"seeds 0-4 end at {', '.join(f'{e:.0f}' for e in ends)}; "
                f"{sum(r is not None for r in reached)} of 5 reach an evaluation return >= 475")
    else:
        text = (f"seeds 0-4 all reach an evaluation return >= 475 by {max(reached):,.0f} environment steps "
                f"and end at {', '.join(f'{e:.0f}' for e in ends)}")
    return {"cartpole": f"{text} (about {round(statistics.median(times))} s per run on 2 CPU cores, start-up "
                        "included)"}


def text_ppo() -> dict[str, str]:
    starts, ends, times = [], [], []
    for seed in (0, 1):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            _, dt = _rlx(home, "run", "--objective", "ppo", "--reward", "prm", "--seed", str(seed), "--no-progress")
            acc = _history(home, "eval/accuracy")
            starts.append(acc[0][1])
            ends.append(acc[-1][1])
            times.append(dt)
    return {"text-ppo": f"takes greedy accuracy from {_pct(starts)} to {_pct(ends)} in 150 steps (seeds 0, 1; "
                        f"about {round(statistics.median(times))} s on 2 CPU cores)"}


def dpo() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        _, dt = _rlx(home, "run", "--objective", "dpo", "--env", "preferences", "--no-progress")
        pref = _history(home, "eval/preference_accuracy")
        acc = _history(home, "eval/accuracy")
    return {"dpo": f"reaches {_pct([pref[-1][1]])} held-out preference accuracy on the synthetic pairs while the "
                   f"policy's arithmetic accuracy goes from {_pct([acc[0][1]])} to {_pct([acc[-1][1]])} (seed 0; "
                   f"about {round(dt)} s on 2 cores)"}


FIGURES: dict[str, Callable[[], dict[str, str]]] = {"headline": headline, "cartpole": cartpole,
                                                     "text-ppo": text_ppo, "dpo": dpo}
SPANS = {"headline-sample": "headline", "headline-range": "headline", "cartpole": "cartpole",
         "text-ppo": "text-ppo", "dpo": "dpo"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(FIGURES), help="measure only these (repeatable)")
    ap.add_argument("--write", action="store_true", help="write the figures into README.md")
    a = ap.parse_args(argv)
    measured: dict[str, str] = {}
    for name in a.only or list(FIGURES):
        t0 = time.perf_counter()
        got = FIGURES[name]()
        print(f"{name} ({time.perf_counter() - t0:.0f} s):", file=sys.stderr)
        for span, text in got.items():
            print(f"  {span}: {text.strip()}", file=sys.stderr)
        measured.update(got)
    if a.write:
        text = README.read_text()
        text = SPAN.sub(lambda m: m.group(1) + measured.get(m.group("name"), m.group("body")) + m.group(4), text)
        README.write_text(text)
        print(f"wrote {len(measured)} figures into {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
