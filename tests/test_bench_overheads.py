"""benchmarks/cli_startup.py and benchmarks/tracking_overhead.py start and finish with tiny
settings (their figures come from full runs, see benchmarks/README.md), and what they
measure behaves: the plugin cache, the sqlite3 reader behind ``rlx runs list`` and the
switch that turns tracking off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _cli import make_plugin, rlx

ROOT = Path(__file__).resolve().parents[1]
CLEAN = ("RLX_DISABLE_PLUGINS", "MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_DEBUG", "RLX_TRACKING")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLEAN}


def test_cli_startup_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cli_startup.py"), "--runs", "1",
                           "--catalog-runs", "2"], capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "rlx --help" in out and "rlx plugins list" in out and "rlx runs list" in out
    trl = Path(sys.executable).with_name("trl").is_file() or shutil.which("trl")
    assert ("ratio rlx --help / trl --help" in out) if trl else ("trl not installed" in out)


def test_tracking_overhead_smoke(tmp_path):
    # the cheaper case only (the grpo case differs in its rlx run flags alone)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tracking_overhead.py"), "--case", "ppo",
                           "--rounds", "1", "--ppo-steps", "6", "--warmup", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ppo round 0: on" in proc.stdout and "overhead = on / off - 1" in proc.stdout


def test_runs_list_reader_matches_catalog(tmp_path, monkeypatch):
    """The sqlite3 reader returns what the SQLModel catalog returns, filters included."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import cli_startup

    from rlx.cli.runs_cmd import _row
    from rlx.registry import catalog_read
    from rlx.registry.catalog import Catalog

    home = tmp_path / "home"
    monkeypatch.setenv("RLX_HOME", str(home))
    cli_startup.populate(home, 6)
    url = f"sqlite:///{home / 'catalog.db'}"
    catalog = Catalog(url)
    for filters in ({}, {"objective": "grpo"}, {"reward": "prm"}, {"env": "preferences"}, {"status": "finished"},
                    {"status": "failed"}, {"limit": 2}):
        fast = catalog_read.list_runs(url, **filters)
        assert fast is not None
        assert [_row(r) for r in fast] == [_row(r) for r in catalog.list_runs(**filters)], filters
    some = catalog.list_runs()[0]
    assert _row(catalog_read.get_run(url, some.id[:6])) == _row(catalog.get_run(some.id[:6]))
    assert catalog_read.get_run(url, "0") is None  # ambiguous: Catalog raises the error
    assert catalog_read.list_runs(f"sqlite:///{tmp_path / 'none.db'}") is None  # no catalog yet: Catalog creates it


def test_plugin_cache(tmp_path):
    """``rlx plugins list`` and ``rlx --help`` import no plugin once the cache is written, show the
    same rows as a full load, and see a plugin installed afterwards."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"  # cwd is on sys.path under `python -m`: keep it unchanged
    cwd.mkdir()
    past = time.time() - 60  # older than the cache's 2-second window for files just written
    os.utime(cwd, (past, past))
    env = {"RLX_HOME": str(home)}
    full = rlx("plugins", "list", "--json", home=home, cwd=cwd, RLX_PLUGIN_CACHE="0")
    assert full.returncode == 0, full.stderr
    first = rlx("plugins", "list", "--json", home=home, cwd=cwd)  # writes the cache
    assert first.returncode == 0 and json.loads(first.stdout) == json.loads(full.stdout)
    assert list((home / "cache").glob("plugins-*.json"))
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "rlx_cache_probe.py").write_text("import sys\nfrom rlx.cli.main import main\n"
            "for argv in (['plugins', 'list', '--json'], ['--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code in (0, None)\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('rlx.plugins')), "
            "'rlx.registry.plugins' in sys.modules)\n")
    for p in (tmp_path / "probe", tmp_path / "probe" / "rlx_cache_probe.py"):
        os.utime(p, (past, past))
    for _ in range(2):  # its own sys.path, so its own cache entry: written by the first, read by the second
        proc = subprocess.run([sys.executable, "-m", "rlx_cache_probe"], capture_output=True, text=True, cwd=cwd,
                              timeout=120, env={**_env(), **env, "PYTHONPATH": str(tmp_path / "probe")})
        assert proc.returncode == 0, proc.stderr
    assert "LOADED [] False" in proc.stdout, proc.stdout[-300:]
    assert json.loads(proc.stdout[:proc.stdout.index("\n]") + 2]) == json.loads(full.stdout)

    # a plugin that adds a command appears in --help and in the listing
    site = make_plugin(tmp_path / "site", "hello", "from rlx.hookspecs import hookimpl\n"
                       "@hookimpl\ndef rlx_register_commands(app):\n"
                       "    @app.command('hello')\n    def hello():\n        print('hi')\n")
    for p in site.rglob("*"):
        os.utime(p, (past, past))
    os.utime(site, (past, past))
    for _ in range(2):  # cold, then from the cache
        rows = {r["name"]: r for r in json.loads(rlx("plugins", "list", "--json", home=home, cwd=cwd, paths=[site]).stdout)}
        assert rows["hello"]["kind"] == "command" and rows["hello"]["status"] == "ok"
        assert "hello" in rlx("--help", home=home, cwd=cwd, paths=[site]).stdout
        assert rlx("hello", home=home, cwd=cwd, paths=[site]).stdout.strip() == "hi"
    # the plugin's module changes: the cache notices
    (site / "hello_rlx_plugin.py").write_text("raise RuntimeError('now broken')\n")
    rows = {r["name"]: r for r in json.loads(rlx("plugins", "list", "--json", home=home, cwd=cwd, paths=[site]).stdout)}
    assert rows["hello"]["status"].startswith("error") and "now broken" in rows["hello"]["status"]


def test_no_tracking(tmp_path):
    """``rlx run --no-tracking``: no MLflow store, even with the policy saved (which a
    tracked run logs as an MLflow model), the run still in the catalog."""
    proc = rlx("run", "--objective", "ppo", "--env", "gym", "--policy", "mlp", "--set", "env.id=CartPole-v1",
               "--set", "run.env_steps=512", "--no-tracking", "--no-progress", home=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tracking off" in proc.stdout and "mlflow run" not in proc.stdout and "policy saved to" in proc.stdout
    assert "warning" not in proc.stderr, proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
    runs = json.loads(rlx("runs", "list", "--json", home=tmp_path).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "FINISHED" and runs[0]["mlflow_run_id"] == ""


def _history(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def test_prewarmed_writer_is_taken_and_stores_everything(tmp_path, monkeypatch):
    """``rlx run`` starts the writer early (rlx.tracking.prewarm); the Tracker takes it over."""
    import rlx.tracking as tracking

    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    monkeypatch.delenv("RLX_TRACKING", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.prewarm()
    spare = tracking._spare
    assert spare is not None
    tracker = tracking.Tracker(uri, "exp", "run", {}, {"a": 1})
    assert tracker._writer is spare and tracking._spare is None
    for step in range(1, 201):
        tracker.log_metrics({"x": float(step)}, step)
    tracker.flush()
    assert _history(uri, tracker.run_id, "x") == list(range(1, 201))
    tracker.log_metrics({"x": 201.0}, 201)
    tracker.close("FINISHED")
    assert spare.proc.poll() is not None
    assert _history(uri, tracker.run_id, "x") == list(range(1, 202))


def test_metrics_wait_for_a_starting_writer(tmp_path, monkeypatch):
    """Until the writer process is ready, metrics are held (no MLflow writes from the training
    process); a flush or the end of the run writes them here."""
    import rlx.tracking as tracking

    monkeypatch.delenv("RLX_TRACKING_WRITER", raising=False)
    monkeypatch.delenv("RLX_TRACKING", raising=False)
    monkeypatch.setattr(tracking._WriterProcess, "ready", lambda self: False)  # never ready
    here: list[int] = []
    real = tracking.Tracker._send

    def send(self, metrics, urgent=False):
        done = real(self, metrics, urgent)
        if done:
            here.append(len(metrics))
        return done

    monkeypatch.setattr(tracking.Tracker, "_send", send)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = tracking.Tracker(uri, "exp", "run", {}, {})
    for step in range(1, 1501):  # past _MAX_BATCH and one flush interval
        tracker.log_metrics({"x": float(step)}, step)
    time.sleep(1.5)
    assert here == []  # held
    tracker.flush()
    assert here == [1500] and _history(uri, tracker.run_id, "x") == list(range(1, 1501))
    tracker.log_metrics({"x": 1501.0}, 1501)
    tracker.close("FINISHED")
    assert _history(uri, tracker.run_id, "x")[-1] == 1501
