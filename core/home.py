"""Where rlx keeps its own files: ``RLX_HOME`` (default ``~/.rlx``) holds the catalog,
checkpoints and the default MLflow store."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote


def home() -> Path:
    return Path(os.environ.get("RLX_HOME") or Path.home() / ".rlx").expanduser().resolve()


def sqlite_uri(path: Path) -> str:
    """``sqlite:///<path>`` that SQLAlchemy (the catalog's and MLflow's engines) reads back
    as ``path``: it percent-decodes the database part and ends it at ``?``, so ``%`` and
    ``?`` are escaped, and nothing else (``#`` means nothing to it). MLflow also creates
    the folder of the escaped path, undecoded: escaping no more than needed keeps that to
    homes whose path holds ``%`` or ``?``."""
    return "sqlite:///" + str(path).replace("%", "%25").replace("?", "%3F")


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI as SQLAlchemy opens it (percent-decoded, without
    its ``?query``); None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0]))


def catalog_url() -> str:
    return os.environ.get("RLX_CATALOG_URL") or sqlite_uri(home() / "catalog.db")


def tracking_uri(override: str | None = None) -> str:
    """``--tracking-uri`` beats ``MLFLOW_TRACKING_URI`` beats ``sqlite:///<home>/mlflow.db``."""
    return override or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_uri(home() / "mlflow.db")


def env_seconds(name: str, default: float, *, positive: bool = False) -> float:
    """A duration in seconds from the environment variable ``name``; ``default`` when it is
    unset or blank. Anything but a finite number >= 0 (> 0 with ``positive``) is a
    UsageError that names the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        from rlx.errors import UsageError

        bound = "greater than 0" if positive else "0 or more"
        raise UsageError(f"{name}={raw!r} is not a number of seconds; set it to a number {bound} "
                         f"(default {default:g}) or unset it")
    return value


def runs_dir() -> Path:
    return home() / "runs"


def store_lock(uri: str) -> Any:
    """An inter-process lock for a local SQLite store: creating its tables, its first
    experiment or a run from several processes at once races otherwise."""
    from filelock import FileLock

    path = sqlite_path(uri)
    if path is not None:
        db = path.expanduser().resolve()
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
    path = sqlite_path(uri)
    return path.expanduser().resolve().parent / "mlartifacts" if path is not None else None
