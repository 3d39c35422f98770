"""Consoles for tables: the terminal's width on a terminal, wide when piped so values
stay whole for grep and scripts."""

from __future__ import annotations

from typing import Any


def console() -> Any:
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=160)


def ended(result: Any, how: str = "") -> str:
    """``run ID STATUS[ how]: metric=value, ...``: the headline metrics the run's objective
    and environment kind registered, as logged at its end."""
    m = result.metrics
    shown = ", ".join(f"{k}={m[k]:.4g}" for k in result.headline if k in m)
    return f"run {result.run_id} {result.status}{f' {how}' if how else ''}: {shown}"
