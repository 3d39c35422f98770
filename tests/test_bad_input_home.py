"""An RLX_HOME whose path holds ``%``, ``?`` or ``#``: SQLAlchemy percent-decodes the
database part of a URL and ends it at ``?``, so the catalog and the MLflow store were
opened somewhere else (``/tmp/a%41b`` as ``/tmp/aAb``), or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import rlx

from rlx import home

ODD = "a%41b?c#d %zz"


@pytest.mark.parametrize("name", [ODD, "plain", "a%41b", "q?x", "h#x", "%25", "caf\u00e9 x"])
def test_sqlite_uri_round_trips(tmp_path, name):
    path = tmp_path / name / "catalog.db"
    uri = home.sqlite_uri(path)
    assert uri.startswith("sqlite:///") and home.sqlite_path(uri) == path
    from sqlalchemy.engine import make_url

    assert make_url(uri).database == str(path)  # what the catalog's and MLflow's engines open


def test_plain_paths_stay_readable(tmp_path):
    assert home.sqlite_uri(Path("/srv/rlx home/mlflow.db")) == "sqlite:////srv/rlx home/mlflow.db"


def test_store_paths_decode(tmp_path, monkeypatch):
    monkeypatch.setenv("RLX_HOME", str(tmp_path / ODD))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RLX_CATALOG_URL", raising=False)
    uri = home.tracking_uri()
    assert home.artifact_root(uri) == tmp_path / ODD / "mlartifacts"
    with home.store_lock(uri):
        assert (tmp_path / ODD / "mlflow.db.lock").is_file()


def test_catalog_in_an_odd_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLX_HOME", str(tmp_path / ODD))
    monkeypatch.delenv("RLX_CATALOG_URL", raising=False)
    from rlx.registry.catalog import Catalog, RunRecord

    Catalog(home.catalog_url()).add_run(RunRecord(id="abcdef012345", status="FINISHED"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [ODD]
    assert (tmp_path / ODD / "catalog.db").is_file()
    from rlx.registry import catalog_read

    assert catalog_read.get_run(home.catalog_url(), "abc").id == "abcdef012345"


@pytest.mark.slow
def test_run_in_an_odd_home(tmp_path):
    """A real run: the catalog, the MLflow store and its artifacts all land in the home."""
    odd = tmp_path / ODD
    odd.mkdir()
    proc = rlx("run", "--steps", "1", "--set", "run.batch_size=1", "--set", "objective.num_generations=2",
               "--set", "env.eval_size=4", "--set", "generation.max_new_tokens=8", "--set", "run.eval_every=0",
               "--no-progress", home=odd)
    assert proc.returncode == 0, proc.stderr
    assert (odd / "catalog.db").is_file() and (odd / "mlflow.db").is_file()
    runs = json.loads(rlx("runs", "list", "--json", home=odd).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "FINISHED"
    assert home.sqlite_path(runs[0]["tracking_uri"]) == odd / "mlflow.db"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=runs[0]["tracking_uri"])
    run = client.get_run(runs[0]["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    artifacts = Path(client.get_experiment(run.info.experiment_id).artifact_location.replace("file://", ""))
    from urllib.parse import unquote

    assert Path(unquote(str(artifacts))) == odd / "mlartifacts" / "rlx" / "arithmetic"  # experiment rlx/arithmetic
    assert any((odd / "mlartifacts" / "rlx" / "arithmetic").rglob("*"))
    # nothing landed where the path decodes to ("%41" read as "A", cut at "?")
    assert not (tmp_path / "aAb").exists()
    # MLflow itself makes the folder of the escaped path (mlflow.store.db.utils
    # _make_parent_dirs_if_sqlite does not decode): an empty folder at most
    strays = [p for p in tmp_path.iterdir() if p.name != ODD]
    assert all(not any(p.rglob("*")) for p in strays), strays
