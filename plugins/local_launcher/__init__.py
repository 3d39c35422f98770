"""The ``local`` launcher: a sweep's runs as processes on this machine (the default)."""

from __future__ import annotations

import rlx
from rlx.plugins.local_launcher.config import LocalConfig


@rlx.hookimpl
def rlx_register_launchers(register):
    register("local", "rlx.plugins.local_launcher.launcher:LocalLauncher", config=LocalConfig, default=True,
             description="Runs as processes on this machine, --max-parallel at once (one per GPU where there are GPUs)")
