"""The suite's copied MLflow schema (``_store_template.py``) is the schema MLflow builds."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path


def _schema(db: Path) -> tuple[set, list, list]:
    con = sqlite3.connect(db)
    try:
        # a table's clauses as a set: MLflow's own builds order a table's constraints
        # differently from one process to the next (they come from a set)
        tables = {(kind, name, frozenset(re.split(r",\s*\n", sql)) if sql else None)
                  for kind, name, sql in con.execute("SELECT type, name, sql FROM sqlite_master")}
        version = con.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = con.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments")
        return tables, version, [(i, n, loc.replace(str(db.parent), "<root>"), s) for i, n, loc, s in experiments]
    finally:
        con.close()


def test_a_copied_store_is_the_store_mlflow_builds(tmp_path, monkeypatch):
    from _store_template import install, template
    from mlflow.tracking import MlflowClient

    built, copied = tmp_path / "built", tmp_path / "copied"
    built.mkdir()
    copied.mkdir()
    make = "import sys; from mlflow.tracking import MlflowClient; MlflowClient(tracking_uri=sys.argv[1]).search_experiments()"
    proc = subprocess.run([sys.executable, "-c", make, f"sqlite:///{built}/mlflow.db"], capture_output=True,
                          text=True, cwd=built, timeout=300)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.chdir(copied)  # the Default experiment's artifact root is ./mlruns of the working directory
    install(template())
    import mlflow.store.db.utils as db_utils

    assert db_utils._initialize_tables.rlx_template  # the copy, not MLflow's migrations, ran here
    client = MlflowClient(tracking_uri=f"sqlite:///{copied}/mlflow.db")
    client.search_registered_models()
    assert client.get_experiment("0").name == "Default"
    assert _schema(copied / "mlflow.db") == _schema(built / "mlflow.db")
