"""Bad input to `rlx runs`: run-id prefixes that are not hex, user text with rich markup,
non-finite metrics in --json, and RLX_DB_TIMEOUT. Runs are written into the catalog
directly (no training), so these stay fast."""

from __future__ import annotations

import json
import math

import pytest
from _cli import rlx

from rlx import home
from rlx.errors import UsageError

RUN_ID = "0123456789ab"


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    """A home whose catalog holds one finished run with markup in its text and NaN/Inf metrics."""
    monkeypatch.setenv("RLX_HOME", str(tmp_path))
    monkeypatch.delenv("RLX_CATALOG_URL", raising=False)
    from rlx.registry.catalog import Catalog, RunRecord

    cat = Catalog(home.catalog_url())
    cat.add_run(RunRecord(id=RUN_ID, name="lr[/0.1]", status="FINISHED", objective="[bold]grpo", rewards="[/x]",
                          env="arith[/]", policy="tiny", experiment="e[/b]", command="rlx run --set 'run.name=[/0.1]'",
                          config_json=json.dumps({"run": {"name": "lr[/0.1]"}}),
                          metrics_json=json.dumps({"eval/accuracy": math.nan, "reward/mean": math.inf,
                                                   "kl/ref": -math.inf, "loss/policy": 0.5})))
    return cat


def _strict(text: str):
    """json.loads that refuses Python's NaN/Infinity extensions, as other parsers do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_list_and_show_json_write_null_for_non_finite(catalog, tmp_path):
    proc = rlx("runs", "list", "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = _strict(proc.stdout)[0]["metrics"]
    assert metrics == {"eval/accuracy": None, "reward/mean": None, "kl/ref": None, "loss/policy": 0.5}
    proc = rlx("runs", "show", RUN_ID, "--json", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _strict(proc.stdout)["metrics"]["eval/accuracy"] is None


def test_list_and_show_print_markup_as_text(catalog, tmp_path):
    proc = rlx("runs", "list", home=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "[bold]grpo" in proc.stdout and "[/x]" in proc.stdout and "arith[/]" in proc.stdout
    proc = rlx("runs", "show", RUN_ID, home=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "lr[/0.1]" in proc.stdout and "e[/b]" in proc.stdout and "'run.name=[/0.1]'" in proc.stdout


@pytest.mark.parametrize("prefix", ["%", "_", "0123%", "01_3", "", "xyz", "0123456789abc"])
def test_run_prefix_must_be_hex(catalog, prefix):
    """``%`` and ``_`` matched any run as LIKE patterns; neither reader takes them now."""
    from rlx.registry import catalog_read

    with pytest.raises(UsageError, match=r"no run '.*'.*12 hex digits"):
        catalog.get_run(prefix)
    with pytest.raises(UsageError, match=r"no run '.*'.*12 hex digits"):
        catalog_read.get_run(home.catalog_url(), prefix)


def test_run_prefix_matches_literally(catalog):
    from rlx.registry import catalog_read

    assert catalog.get_run("0123").id == RUN_ID
    assert catalog.get_run("0123456789AB").id == RUN_ID  # ids are hex: case does not matter
    assert catalog_read.get_run(home.catalog_url(), "0123").id == RUN_ID
    with pytest.raises(UsageError, match="no run '0124' in the catalog"):
        catalog.get_run("0124")
    assert catalog_read.get_run(home.catalog_url(), "0124") is None  # Catalog says why


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf", "1e400"])
def test_db_timeout_must_be_seconds(monkeypatch, value):
    from rlx.registry.catalog_read import db_timeout

    monkeypatch.setenv("RLX_DB_TIMEOUT", value)
    with pytest.raises(UsageError, match=rf"RLX_DB_TIMEOUT='{value}' is not a number of seconds"):
        db_timeout()


def test_db_timeout_values(monkeypatch):
    from rlx.registry.catalog_read import db_timeout

    monkeypatch.delenv("RLX_DB_TIMEOUT", raising=False)
    assert db_timeout() == 30.0
    for value, seconds in (("0", 0.0), ("2.5", 2.5), (" 7 ", 7.0), ("", 30.0)):
        monkeypatch.setenv("RLX_DB_TIMEOUT", value)
        assert db_timeout() == seconds
