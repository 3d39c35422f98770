"""One GRPO step on ``tiny``: 64 completions of 32 new tokens (8 prompts x 8), through
the real loop (generation, prm scoring, reference + policy forward, backward, AdamW).

    python benchmarks/grpo_step.py              # 1 warm-up + 5 timed steps
    python benchmarks/grpo_step.py --steps 2    # smoke

Prints seconds per step (median of the timed steps), completion tokens per second, the
share of the step spent generating, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile

from rlx.hookspecs import hookimpl


class Collector:
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    @hookimpl
    def rlx_step_end(self, step: int, metrics: dict) -> None:
        self.steps.append(dict(metrics))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6, help="steps in all, the first is warm-up")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--policy", default="tiny")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["RLX_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from rlx.config import compose, resolve
        from rlx.loop import train
        from rlx.registry import get_registry

        reg = get_registry()
        collector = Collector()
        reg.pm.register(collector, name="benchmark-collector")
        sets = [f"objective.num_generations={args.generations}", f"run.batch_size={args.prompts}",
                f"generation.max_new_tokens={args.tokens}", f"generation.min_new_tokens={args.tokens}",
                "run.eval_every=0", "run.save_policy=false", "env.eval_size=1", "run.samples_to_log=0"]
        cfg = resolve(compose(None, {"objective": "grpo", "reward": ["prm"], "policy": args.policy,
                                     "steps": args.steps}, sets), reg)
        train(cfg, reg, progress=False)

    timed = collector.steps[1:] or collector.steps
    step_s = statistics.median(m["perf/step_s"] for m in timed)
    gen_s = statistics.median(m["perf/gen_s"] for m in timed)
    n = args.prompts * args.generations
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"grpo step on {args.policy}: {n} completions x {args.tokens} tokens, {len(timed)} timed steps")
    print(f"  s/step        {step_s:.3f}")
    print(f"  tokens/s      {n * args.tokens / step_s:.0f}")
    print(f"  generation    {gen_s / step_s:.0%} of the step")
    print(f"  peak RSS      {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
