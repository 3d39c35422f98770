"""Consoles for tables: the terminal's width on a terminal, wide when piped so values
stay whole for grep and scripts."""

from __future__ import annotations

from typing import Any


def console() -> Any:
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=160)
