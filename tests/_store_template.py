"""In the tests, a new MLflow SQLite store gets its schema as a copy of one built once per
session instead of building it afresh. MLflow builds a store's schema by running its
Alembic migrations one by one: ~3 s of CPU for every fresh store, and nearly every test
has one of its own. The copy is MLflow's own schema at the installed version, built by
MLflow's own ``_initialize_tables`` (tables only: the store still adds its Default
experiment itself, with its own artifact root).

The test process installs it (``conftest.py``) and so does the zygote (``_zygote.py``),
which finds the template's path in ``RLX_TEST_STORE_TEMPLATE``. A process started afresh
(``python -m rlx.cli.main`` run by a test itself, a tracking writer) builds its store the
ordinary way. ``RLX_TEST_STORE_TEMPLATE=0`` turns the copy off everywhere."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

ENV = "RLX_TEST_STORE_TEMPLATE"
_built: Path | None = None


def template() -> Path | None:
    """The session's template store, built on first use; None when turned off."""
    global _built
    if os.environ.get(ENV) == "0":
        return None
    if _built is None:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables

        _built = Path(tempfile.mkdtemp(prefix="rlx-store-template-")) / "mlflow.db"
        engine = sqlalchemy.create_engine(f"sqlite:///{_built}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
    return _built


def use() -> None:
    """Build the template (once) and install it in this process, unless turned off."""
    path = template()
    if path is not None:
        install(path)


def remove() -> None:
    """Delete the session's template (at the end of the session)."""
    if _built is not None:
        import shutil

        shutil.rmtree(_built.parent, ignore_errors=True)


def install(path: Path) -> None:
    """From now on this process gives a new SQLite store the schema of ``path``."""
    import mlflow.store.db.utils as db_utils
    import mlflow.store.model_registry.sqlalchemy_store as registry_store

    original = db_utils._initialize_tables
    if getattr(original, "rlx_template", None):
        return

    def initialize(engine) -> None:
        file = engine.url.database
        if engine.url.get_backend_name() != "sqlite" or not file or file == ":memory:":
            return original(engine)
        src, dst = sqlite3.connect(path), sqlite3.connect(file)
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()

    initialize.rlx_template = True  # type: ignore[attr-defined]
    db_utils._initialize_tables = initialize
    registry_store._initialize_tables = initialize  # imported by name there
