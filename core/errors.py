"""Errors a user can act on. The CLI prints ``error: <message>`` and exits with
``exit_code``; a traceback appears only with ``--debug``."""

from __future__ import annotations


class RlxError(Exception):
    """An error whose message names the problem and the fix."""

    exit_code = 1


class UsageError(RlxError):
    """Bad names, flags or config values: the command line or config must change."""

    exit_code = 2


class ConfigError(UsageError):
    """A config value failed validation."""


class PluginError(RlxError):
    """A plugin could not be loaded or did not honour its contract."""

    exit_code = 3


class RunError(RlxError):
    """A run failed while executing."""

    exit_code = 1


class RunKilled(RlxError):
    """A signal stopped the run, which was recorded KILLED (with its checkpoint). The
    process exits with the shell's convention for that signal, 128 + its number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
