"""Where rlx keeps its own files: ``RLX_HOME`` (default ``~/.rlx``) holds the catalog,
checkpoints and the default MLflow store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def home() -> Path:
    return Path(os.environ.get("RLX_HOME") or Path.home() / ".rlx").expanduser().resolve()


def catalog_url() -> str:
    return os.environ.get("RLX_CATALOG_URL") or f"sqlite:///{home() / 'catalog.db'}"


def tracking_uri(override: str | None = None) -> str:
    """``--tracking-uri`` beats ``MLFLOW_TRACKING_URI`` beats ``sqlite:///<home>/mlflow.db``."""
    return override or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def runs_dir() -> Path:
    return home() / "runs"


def store_lock(uri: str) -> Any:
    """An inter-process lock for a local SQLite store: creating its tables, its first
    experiment or a run from several processes at once races otherwise."""
    from filelock import FileLock

    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from rlx.errors import UsageError

            raise UsageError(f"cannot create '{db.parent}' for the store '{uri}': {exc.strerror}; "
                             "set RLX_HOME (or the store URI) to a writable place") from None
        return FileLock(str(db) + ".lock", timeout=600)
    from contextlib import nullcontext

    return nullcontext()


def artifact_root(uri: str) -> Path | None:
    """Artifacts of a local SQLite store live beside it (``<dir>/mlartifacts``) rather than
    in whatever directory the run was started from; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts"
    return None
