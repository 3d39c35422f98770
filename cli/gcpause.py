"""Cyclic garbage collection paused while the CLI starts.

Importing typer and rich and building the app allocate tens of thousands of objects
that live as long as the process and create almost no cyclic garbage, yet trigger about
a hundred collections (5-10% of ``rlx --help``/``rlx plugins list``). ``rlx.cli.main``
pauses collection for its imports and for each command; every command that runs for
long (``rlx run``, ``rlx runs resume``, ``rlx ui``, plugin commands) calls ``resume()``
before its work, and ``main()`` restores the previous state when it returns.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> bool:
    """Stop collecting; True if this call did (collection was on)."""
    global _paused
    if not gc.isenabled():
        return False
    gc.disable()
    _paused = True
    return True


def resume() -> None:
    """Collect again if ``pause`` stopped it."""
    global _paused
    if _paused:
        _paused = False
        gc.enable()
