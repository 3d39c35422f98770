"""rlx's pytest plugin, registered through the ``pytest11`` entry point: every project
that installs rlx gets the ``rlx_run`` fixture. pytest imports this module at start-up
in all such projects, so it imports nothing heavy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture
def rlx_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``rlx_run(*cli_args, steps=2, tracking=False, **sets) -> dict[str, float]``: a
    short ``rlx run`` in this process against a private RLX_HOME (``tmp_path/"rlx-home"``,
    also set as RLX_HOME for the rest of the test, so ``rlx.home`` and the catalog find
    the run). Returns the run's final metrics; ``.result`` holds the whole
    ``rlx.RunResult``. Arguments as ``rlx.testing.run``::

        def test_my_reward_trains(rlx_run):
            metrics = rlx_run("--reward", "my_reward", objective__num_generations=2)
            assert metrics["reward/my_reward"] >= 0
    """
    home = tmp_path / "rlx-home"
    monkeypatch.setenv("RLX_HOME", str(home))
    monkeypatch.setenv("RLX_TRACKING", "off")
    for name in ("MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_RUN_ID"):
        monkeypatch.delenv(name, raising=False)

    def runner(*cli_args: str, steps: int = 2, tracking: bool = False, **sets: Any) -> Any:
        from rlx.testing.runner import run

        return run(*cli_args, steps=steps, home=home, tracking=tracking, **sets)

    return runner
