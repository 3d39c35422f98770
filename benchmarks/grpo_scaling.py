"""How the cost of a GRPO step grows with the work: rlx ``grpo`` against TRL's ``GRPOTrainer``.

Two axes, on the 27.3M-parameter ``medium`` char-level Llama by default:

* completion length 32 -> 128 -> 512 new tokens, at 64 completions per step (8 prompts x 8);
* completions per step 64 -> 256, at 32 new tokens, by adding prompts (8 x 8, then 32 x 8).

The completions axis grows the number of prompts and keeps the group size at 8 (not 8 x 32)
so that only the batch grows: GRPO's per-group statistics stay those of 8 completions, and
rlx's scoring of each group's prompt once (TRL scores it once per row) saves the same share
at every point. Growing the group instead would widen that saving with the group and
credit rlx's exponent with it. ``--generations`` sets the group size.

Every point is a pair of runs of ``benchmarks/grpo_vs_trl.py``'s children (one process per
library per point and round, rlx then TRL), so each peak RSS is that library's own process
and the settings are grpo_vs_trl's: matched fp32 by default, ``--at-defaults`` for each
library at its own recommended settings. The point shared by both axes (32 tokens, 64
completions) is measured once. For every point the script prints both libraries' s/step
(median of the timed steps of all rounds), peak RSS (the largest of all rounds) and the
ratios rlx/TRL; for each axis, each library's growth exponent (the least-squares slope of
log s/step, and of log peak RSS, against log length or log completions) and whether rlx's
is no worse (no larger) than TRL's. Peak RSS includes what does not grow (Python, torch,
the weights, the optimizer state), so its exponents are well under 1.

    python benchmarks/grpo_scaling.py                                # medium, both axes, matched fp32
    python benchmarks/grpo_scaling.py --at-defaults                  # each library at its own defaults
    python benchmarks/grpo_scaling.py --lengths 32,128 --completions 64 --rounds 2
    python benchmarks/grpo_scaling.py --size medium --lengths 32 --completions 64 --steps 1 --warmup 0  # one point
    python benchmarks/grpo_scaling.py --size tiny --lengths 4,8 --completions 2,4 --generations 2 \\
        --steps 1 --warmup 0 --rounds 1                              # smoke: 6 processes, ~2 min

The length axis runs at the smallest of ``--completions`` and the completions axis at the
smallest of ``--lengths``. Points run cheapest first (fewest generated tokens), so a long
run shows the small points before the 512-token one. The model's declared context
(``max_position_embeddings``, 128 in the tiny config both sizes come from) is raised to fit
the longest prompt + completion; the positions are rotary, so no weight changes.
Memory: at 512 tokens x 64 completions the medium model keeps activations for ~34k tokens
through the backward pass: expect several GiB per process (they run one at a time).
Time: the defaults (1 warm-up + 2 timed steps, 1 round, 8 processes) should take roughly
17-25 minutes on 2 idle cores, most of it at the 512-token point.
Needs the ``bench`` extra (trl).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_vs_trl import prepare_model, run_child  # noqa: E402  (the benchmarks folder is not a package)

LIBS = ("rlx", "trl")
PROMPT_ROOM = 32  # positions kept for the prompt (the arithmetic prompts are at most ~15 characters)


# -- the points --------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    tokens: int
    completions: int

    def label(self, generations: int) -> str:
        prompts = self.completions // generations
        return (f"{self.tokens} tokens, {self.completions} completions "
                f"({prompts} prompt{'' if prompts == 1 else 's'} x {generations})")


@dataclass
class Measured:
    """Every round's child results of one library at one point."""
    runs: list[dict[str, Any]] = field(default_factory=list)

    def step_s(self) -> float:
        return statistics.median(x for r in self.runs for x in r["step_s"])

    def rss_mib(self) -> float:
        return max(r["peak_rss_mib"] for r in self.runs)

    def cpu_s(self) -> float:
        return statistics.median([x for r in self.runs for x in r["cpu_s"]] or [math.nan])


def axes(lengths: list[int], completions: list[int]) -> dict[str, list[Point]]:
    """The points of each axis: lengths at the fewest completions, completions at the shortest length."""
    return {"length": [Point(n, completions[0]) for n in lengths],
            "completions": [Point(lengths[0], c) for c in completions]}


def schedule(by_axis: dict[str, list[Point]]) -> list[Point]:
    """Each distinct point once, cheapest first: a failure late in a long run leaves the rest printed."""
    return sorted({p for pts in by_axis.values() for p in pts}, key=lambda p: (p.tokens * p.completions, p.tokens))


# -- the model ---------------------------------------------------------------------------

def prepare(size: str, folder: Path, longest: int) -> tuple[Path, str]:
    """grpo_vs_trl's model for ``size``, its declared context raised to hold ``longest`` new tokens."""
    import shutil

    path, line = prepare_model(size, folder)
    need = longest + PROMPT_ROOM
    config = json.loads((path / "config.json").read_text())
    if config["max_position_embeddings"] >= need:
        return path, line
    if folder not in path.parents:  # the shipped tiny checkpoint: change a copy, never the original
        path = Path(shutil.copytree(path, folder / f"{size}-long"))
    config["max_position_embeddings"] = need
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return path, f"{line}; context raised to {need} positions (rotary: same weights)"


# -- measuring ---------------------------------------------------------------------------

def child_args(a: argparse.Namespace, point: Point) -> argparse.Namespace:
    """The options grpo_vs_trl's ``run_child`` reads, for one point."""
    return argparse.Namespace(steps=a.steps, warmup=a.warmup, prompts=point.completions // a.generations,
                              generations=a.generations, tokens=point.tokens, threads=a.threads,
                              breakdown=False, at_defaults=a.at_defaults, rlx_set=a.rlx_set, device="cpu")


def check_run(lib: str, point: Point, out: dict[str, Any]) -> list[str]:
    """What in a child's result would make the point not measure what it says."""
    problems = []
    lens = out["completion_len"]
    if lens and (min(lens) != point.tokens or max(lens) != point.tokens):
        problems.append(f"{lib} completion lengths {min(lens):.0f}..{max(lens):.0f}, not {point.tokens}")
    return problems


def measure(a: argparse.Namespace, model: Path, points: list[Point]) -> dict[Point, dict[str, Measured]]:
    """Runs every point, each library in its own process, ``a.rounds`` times; prints as it goes."""
    res = {p: {lib: Measured() for lib in LIBS} for p in points}
    total = a.rounds * len(points)
    for r in range(a.rounds):
        for i, p in enumerate(points):
            done = r * len(points) + i + 1
            for lib in LIBS:
                out = run_child(lib, model, child_args(a, p))
                res[p][lib].runs.append(out)
                s = statistics.median(out["step_s"])
                print(f"[{done}/{total}] round {r} {p.label(a.generations)} {lib}: {s:.3f} s/step "
                      f"(median of {len(out['step_s'])}), CPU {statistics.median(out['cpu_s'] or [math.nan]):.3f} "
                      f"s/step, peak RSS {out['peak_rss_mib']:,.0f} MiB", flush=True)
            problems = check_run("rlx", p, res[p]["rlx"].runs[-1]) + check_run("trl", p, res[p]["trl"].runs[-1])
            if res[p]["rlx"].runs[-1]["prompts"] != res[p]["trl"].runs[-1]["prompts"]:
                problems.append("the libraries trained on different prompts")
            for problem in problems:
                print(f"  WARNING: {problem}", flush=True)
    return res


# -- reporting ---------------------------------------------------------------------------

def growth_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y against log x; None below two distinct x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sxx


def fmt(e: float | None) -> str:
    return "n/a" if e is None else f"{e:.3f}"


def no_worse(rlx: float | None, trl: float | None) -> str:
    if rlx is None or trl is None:
        return "n/a (one point)"
    # judged on the printed figures, so that a reader's check of the line agrees with it
    return f"{'yes' if float(fmt(rlx)) <= float(fmt(trl)) else 'no'} ({fmt(rlx)} vs {fmt(trl)})"


def report_axis(axis: str, points: list[Point], res: dict[Point, dict[str, Measured]], generations: int) -> None:
    """The axis's table, each library's exponents and the comparison."""
    fixed = (f"at {points[0].label(generations).split(', ', 1)[1]}" if axis == "length"
             else f"at {points[0].tokens} tokens, {generations} completions per prompt")
    print(f"\n{axis} axis, {fixed}:")
    print(f"  {axis:>11}  rlx s/step  trl s/step  rlx/trl  rlx RSS MiB  trl RSS MiB  RSS rlx/trl")
    for p in points:
        m = res[p]
        x = p.tokens if axis == "length" else p.completions
        t = {lib: m[lib].step_s() for lib in LIBS}
        rss = {lib: m[lib].rss_mib() for lib in LIBS}
        print(f"  {x:>11}  {t['rlx']:>10.3f}  {t['trl']:>10.3f}  {t['rlx'] / t['trl']:>7.2f}  "
              f"{rss['rlx']:>11,.0f}  {rss['trl']:>11,.0f}  {rss['rlx'] / rss['trl']:>11.2f}")
    xs = [float(p.tokens if axis == "length" else p.completions) for p in points]
    exp: dict[str, dict[str, float | None]] = {}
    for lib in LIBS:
        exp[lib] = {"time": growth_exponent(xs, [res[p][lib].step_s() for p in points]),
                    "rss": growth_exponent(xs, [res[p][lib].rss_mib() for p in points])}
        print(f"{axis} exponent {lib}: s/step {fmt(exp[lib]['time'])}, peak RSS {fmt(exp[lib]['rss'])}")
    print(f"{axis}: rlx's exponent no worse than TRL's: s/step {no_worse(exp['rlx']['time'], exp['trl']['time'])}, "
          f"peak RSS {no_worse(exp['rlx']['rss'], exp['trl']['rss'])}", flush=True)


# -- the command line --------------------------------------------------------------------

def positive_list(text: str) -> list[int]:
    """``32,128,512`` -> [32, 128, 512], sorted, each value once; an argparse error otherwise."""
    try:
        values = sorted({int(v) for v in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None
    if values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "medium"], default="medium")
    ap.add_argument("--lengths", type=positive_list, default=[32, 128, 512],
                    help="new tokens per completion, exactly (the length axis)")
    ap.add_argument("--completions", type=positive_list, default=[64, 256],
                    help="completions per step (the completions axis), multiples of --generations")
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt (the group size), fixed")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up steps per run, not timed")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each library at each point")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in both (0: each library's default)")
    ap.add_argument("--at-defaults", action="store_true",
                    help="each library at its own recommended settings (as grpo_vs_trl.py --at-defaults)")
    ap.add_argument("--rlx-set", action="append", metavar="KEY=VALUE", help="an extra rlx override, repeatable")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.rounds < 1 or a.warmup < 0 or a.generations < 1 or a.threads < 0:
        ap.error("--steps, --rounds and --generations must be >= 1, --warmup and --threads >= 0")
    odd = [c for c in a.completions if c % a.generations]
    if odd:
        ap.error(f"--completions {','.join(map(str, odd))}: not a multiple of --generations {a.generations}")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    by_axis = axes(a.lengths, a.completions)
    points = schedule(by_axis)
    print(f"GRPO step cost against the work: {len(points)} points, {a.warmup} warm-up + {a.steps} timed steps per "
          f"run, {a.rounds} round(s), rlx then TRL at each point; torch threads: {a.threads or 'each library default'}; "
          f"{'each library at its own defaults' if a.at_defaults else 'matched fp32 settings'}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        model, line = prepare(a.size, Path(folder), max(a.lengths))
        print(f"== {line}", flush=True)
        res = measure(a, model, points)
    for axis, pts in by_axis.items():
        report_axis(axis, pts, res, a.generations)


if __name__ == "__main__":
    main()
