"""benchmarks/grpo_scaling.py runs both libraries at every point of both axes on the tiny
model and reports each point, the ratios and the growth exponents (figures come from the
full medium run in benchmarks/README.md, not from this test)."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "grpo_scaling.py"
NUM = r"(-?[\d.]+)"


def run(tmp_path: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=timeout)


def slope(xs: list[float], ys: list[float]) -> float:
    # two points: the exponent is the slope between them
    return (math.log(ys[1]) - math.log(ys[0])) / (math.log(xs[1]) - math.log(xs[0]))


def table(out: str, axis: str) -> dict[int, list[float]]:
    """The rows of an axis's table: x -> [rlx s, trl s, ratio, rlx RSS, trl RSS, RSS ratio]."""
    block = out.split(f"\n{axis} axis, ", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in block.splitlines()[2:]:
        cells = line.split()
        if len(cells) == 7 and cells[0].isdigit():
            rows[int(cells[0])] = [float(c.replace(",", "")) for c in cells[1:]]
    return rows


def test_grpo_scaling_smoke(tmp_path):
    pytest.importorskip("trl")
    proc = run(tmp_path, "--size", "tiny", "--lengths", "4,8", "--completions", "2,4", "--generations", "2",
               "--steps", "1", "--warmup", "0", "--rounds", "1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "WARNING" not in out, out  # exact completion lengths, the same prompts in both

    # every point, once (4 tokens x 2 completions is on both axes), for both libraries
    progress = {}
    for tokens, comps, lib, s, rss in re.findall(
            rf"^\[\d/3\] round 0 (\d+) tokens, (\d+) completions \([^)]*\) (rlx|trl): {NUM} s/step "
            rf"\(median of 1\), CPU [^,]+, peak RSS ([\d,]+) MiB$", out, re.M):
        progress[int(tokens), int(comps), lib] = (float(s), float(rss.replace(",", "")))
    points = {(4, 2), (8, 2), (4, 4)}
    assert set(progress) == {(t, c, lib) for t, c in points for lib in ("rlx", "trl")}, out

    axes = {"length": ([4, 8], lambda x: (x, 2)), "completions": ([2, 4], lambda x: (4, x))}
    for axis, (xs, point) in axes.items():
        rows = table(out, axis)
        assert sorted(rows) == xs, out
        for x, (rs, ts, ratio, rrss, trss, rss_ratio) in rows.items():
            assert all(math.isfinite(v) and v > 0 for v in (rs, ts, ratio, rrss, trss, rss_ratio)), rows
            # the table is what the runs measured, and the ratios are of its own columns
            assert rs == pytest.approx(progress[(*point(x), "rlx")][0], abs=1e-3)
            assert ts == pytest.approx(progress[(*point(x), "trl")][0], abs=1e-3)
            assert rrss == pytest.approx(progress[(*point(x), "rlx")][1], abs=1)
            assert ratio == pytest.approx(rs / ts, rel=0.02, abs=0.01)
            assert rss_ratio == pytest.approx(rrss / trss, abs=0.01)
        exps = {}
        for lib, col in (("rlx", 0), ("trl", 1)):
            m = re.search(rf"^{axis} exponent {lib}: s/step {NUM}, peak RSS {NUM}$", out, re.M)
            assert m, f"no {axis} exponent line for {lib}:\n{out}"
            e_time, e_rss = float(m[1]), float(m[2])
            assert math.isfinite(e_time) and math.isfinite(e_rss)
            assert e_time == pytest.approx(slope(xs, [rows[x][col] for x in xs]), abs=0.05)
            assert e_rss == pytest.approx(slope(xs, [rows[x][col + 3] for x in xs]), abs=0.01)
            exps[lib] = (e_time, e_rss)
        m = re.search(rf"^{axis}: rlx's exponent no worse than TRL's: s/step (yes|no) \({NUM} vs {NUM}\), "
                      rf"peak RSS (yes|no) \({NUM} vs {NUM}\)$", out, re.M)
        assert m, out
        assert (m[1] == "yes") == (float(m[2]) <= float(m[3])) and float(m[2]) == exps["rlx"][0]
        assert (m[4] == "yes") == (float(m[5]) <= float(m[6])) and float(m[6]) == exps["trl"][1]


@pytest.mark.parametrize("args, message", [
    (["--lengths", "0"], "every value must be >= 1"),
    (["--completions", "64,x"], "not a comma-separated list"),
    (["--completions", "12"], "not a multiple of --generations 8"),
    (["--steps", "0"], "must be >= 1"),
])
def test_grpo_scaling_bad_input(tmp_path, args, message):
    proc = run(tmp_path, *args, timeout=60)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_growth_exponent(monkeypatch):
    spec = importlib.util.spec_from_file_location("grpo_scaling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "grpo_scaling", mod)  # dataclasses look their module up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script adds the benchmarks folder
    spec.loader.exec_module(mod)
    assert mod.growth_exponent([32, 128, 512], [3 * x ** 1.5 for x in (32, 128, 512)]) == pytest.approx(1.5)
    assert mod.growth_exponent([64, 256], [2.0, 2.0]) == pytest.approx(0.0)
    assert mod.growth_exponent([64], [2.0]) is None
    # each distinct point once, cheapest first; the shared point belongs to both axes
    by_axis = mod.axes([32, 128, 512], [64, 256])
    assert [(p.tokens, p.completions) for p in mod.schedule(by_axis)] == [(32, 64), (32, 256), (128, 64), (512, 64)]
