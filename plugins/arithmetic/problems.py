"""Pure logic of the arithmetic environment: generation, gold solutions, parsing, checking.

Nothing here knows about the env class (or torch), so it is cheap to import and test.
An expression is kept as ``nums`` and ``ops`` with ``len(nums) == len(ops) + 1``.
"""

from __future__ import annotations

import math
import random
import re
from typing import Any, Sequence

from rlx.environment import StepVerdict
from rlx.plugins.arithmetic.config import ArithmeticConfig

Step = tuple[int, str, int, int]  # a, op, b, result

# Numbers are bounded to 30 digits: completions can be arbitrary garbage and int() on a
# huge digit string is slow or refused (Python's int max_str_digits); ASCII digits only,
# since \d would also accept other scripts' digits that int() happily converts.
_INT = r"-?[0-9]{1,30}"
_INT_RE = re.compile(_INT)
_STEP_RE = re.compile(rf"({_INT})([+*-])({_INT})=({_INT})")


def apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def next_reduction(ops: Sequence[str]) -> int:
    """Index of the operation the gold solution reduces next: leftmost ``*``, else leftmost."""
    return ops.index("*") if "*" in ops else 0


def solve(nums: Sequence[int], ops: Sequence[str], error_at: int = -1, error: int = 0) -> list[Step]:
    """The gold reduction sequence of an expression; with ``error_at``, step ``error_at``'s
    result is off by ``error`` and every later step carries the mistake on."""
    nums, ops, steps = list(nums), list(ops), []
    while ops:
        i = next_reduction(ops)
        a, op, b = nums[i], ops.pop(i), nums[i + 1]
        nums[i : i + 2] = [apply(a, op, b) + (error if len(steps) == error_at else 0)]
        steps.append((a, op, b, nums[i]))
    return steps


FLAWS = ("slip", "skip", "operand", "early")


def _lines(steps: list[Step], answer: int) -> str:
    return "\n".join([f"{a}{op}{b}={c}" for a, op, b, c in steps] + [f"A:{answer}"])


def _after(nums: Sequence[int], ops: Sequence[str], steps: list[Step]) -> tuple[list[int], list[str]]:
    """The expression left once the gold ``steps`` are done."""
    nums, ops = list(nums), list(ops)
    for *_, c in steps:
        i = next_reduction(ops)
        nums[i : i + 2] = [c]
        del ops[i]
    return nums, ops


def _flaw(nums: list[int], ops: list[str], kind: str, rng: random.Random) -> str:
    k = rng.randrange(len(ops))
    gold = solve(nums, ops)
    if kind == "early":  # answers the running value after k steps
        return _lines(gold[:k], gold[k - 1][3] if k else nums[0])
    if kind in ("skip", "operand"):
        left, left_ops = _after(nums, ops, gold[:k])
        i = next_reduction(left_ops)
        if kind == "skip":  # the next reduction's right operand forgotten
            del left[i + 1], left_ops[i]
        else:  # that operand miscopied, and the step computed right with the wrong number
            left[i + 1] = max(left[i + 1] + rng.choice((-3, -2, -1, 1, 2, 3)), 0)
        rest = solve(left, left_ops)
        return _lines(gold[:k] + rest, rest[-1][3] if rest else left[0])
    steps = solve(nums, ops, k, rng.choice((-3, -2, -1, 1, 2, 3)))
    return _lines(steps, steps[-1][3])


def flawed_solution(task: dict[str, Any], rng: random.Random, kinds: Sequence[str] = ("slip",)) -> str:
    """A solution in the gold format with one mistake whose final answer is wrong, of a
    kind drawn from ``kinds``: ``slip`` (a step's result off by 1-3, carried through),
    ``skip`` (one term forgotten), ``operand`` (a number miscopied, computed with) or
    ``early`` (an answer before the last step). Falls back to ``slip`` when the drawn
    mistake happens not to change the answer (a forgotten ``+0``), drawn again until it does."""
    nums, ops = parse_expr(task["expr"])
    # one kind draws nothing, so slips alone replay the draws of the slips-only generator
    kind = kinds[0] if len(kinds) == 1 else rng.choice(list(kinds))
    for _ in range(20):  # a later *0 or a forgotten +0 can undo a mistake: draw again
        text = _flaw(nums, ops, kind, rng)
        if final_answer(text) != task["answer"]:
            break
        kind = "slip"
    return text


def format_expr(nums: Sequence[int], ops: Sequence[str]) -> str:
    return str(nums[0]) + "".join(f"{op}{n}" for op, n in zip(ops, nums[1:]))


def parse_expr(expr: str) -> tuple[list[int], list[str]]:
    """Inverse of :func:`format_expr` (generated expressions have no negative numbers)."""
    parts = re.split(r"([+*-])", expr)
    return [int(p) for p in parts[::2]], parts[1::2]


def generate(rng: random.Random, cfg: ArithmeticConfig) -> tuple[list[int], list[str]]:
    """Draw one expression. The gold order reduces every product first and then sums left to
    right, so the intermediates are the (non-negative) products and the running total of the
    signed terms; with ``allow_negative=False`` a subtracted term is drawn again until it
    fits under the running total, which never loops long because a zero always fits."""
    ops = [rng.choice(cfg.ops) for _ in range(rng.randint(cfg.min_ops, cfg.max_ops))]
    sizes, signs = [1], ["+"]  # terms: maximal runs of numbers joined by '*'
    for op in ops:
        if op == "*":
            sizes[-1] += 1
        else:
            sizes.append(1)
            signs.append(op)
    nums: list[int] = []
    total = 0
    for size, sign in zip(sizes, signs):
        limit = total if sign == "-" and not cfg.allow_negative else None
        if size == 1:  # a plain +/- operand
            hi = cfg.max_operand if limit is None else min(cfg.max_operand, limit)
            factors = [rng.randint(0, hi)]
        else:
            while True:
                factors = [rng.randint(0, cfg.max_factor) for _ in range(size)]
                if limit is None or math.prod(factors) <= limit:
                    break
        nums += factors
        total = apply(total, sign, math.prod(factors))
    return nums, ops


def make_task(nums: Sequence[int], ops: Sequence[str]) -> dict[str, Any]:
    steps = solve(nums, ops)
    lines = [f"{a}{op}{b}={c}" for a, op, b, c in steps]
    answer = steps[-1][3] if steps else nums[0]
    expr = format_expr(nums, ops)
    return {"prompt": f"Q:{expr}\n", "answer": answer, "steps": lines,
            "solution": "\n".join(lines + [f"A:{answer}"]), "expr": expr}


def parse_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if _INT_RE.fullmatch(text) else None


def final_answer(completion: str) -> int | None:
    """The integer on the last line starting with ``A:``, or None if absent or unparsable."""
    for line in reversed(completion.split("\n")):
        line = line.strip()
        if line.startswith("A:"):
            return parse_int(line[2:])
    return None


def check_steps(expr: str, answer: int, completion: str) -> list[StepVerdict]:
    """One verdict per non-empty line, with prefix semantics: a line is right only if every
    line before it was right and it is exactly the next gold reduction (or, for ``A:x``,
    the answer once nothing is left to reduce). Lines after the answer line are wrong."""
    nums, ops = parse_expr(expr)
    verdicts: list[StepVerdict] = []
    ok, answered, pos = True, False, 0
    for line in completion.split("\n"):
        start, pos = pos, pos + len(line) + 1
        text = line.strip()
        if not text:
            continue
        if not ok or answered:
            ok = False
        elif text.startswith("A:"):
            answered = True
            ok = not ops and parse_int(text[2:]) == answer
        else:
            m = _STEP_RE.fullmatch(text)
            i = next_reduction(ops) if ops else -1
            ok = (m is not None and i >= 0
                  and (int(m[1]), m[2], int(m[3])) == (nums[i], ops[i], nums[i + 1])
                  and int(m[4]) == apply(nums[i], ops[i], nums[i + 1]))
            if ok:
                nums[i : i + 2] = [int(m[4])]
                del ops[i]
        verdicts.append(StepVerdict(end=start + len(line.rstrip()), correct=ok))
    return verdicts
