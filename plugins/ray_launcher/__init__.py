"""Launcher ``ray``: a sweep's runs as tasks on a Ray cluster (or a private local Ray instance)."""

from rlx.hookspecs import hookimpl
from rlx.plugins.ray_launcher.config import RayLauncherConfig


@hookimpl
def rlx_register_launchers(register):
    # by import path: Ray takes seconds to import, and only a sweep that picks it pays for that
    register("ray", "rlx.plugins.ray_launcher.launcher:RayLauncher", config=RayLauncherConfig,
             description="Each run as a Ray task on a cluster's nodes (pip install 'rlx[ray]')")
