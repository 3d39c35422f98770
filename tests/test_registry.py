"""Plugin discovery: entry points only, RLX_DISABLE_PLUGINS, broken plugins isolated."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint, entry_points

import pytest

from rlx.errors import UsageError
from rlx.registry import Registry

BUILTINS = {"grpo", "sft", "prm", "verifier", "arithmetic", "hf", "tiny"}


def test_builtins_come_from_entry_points():
    names = {ep.name for ep in entry_points(group="rlx")}
    assert BUILTINS <= names
    reg = Registry()
    assert {r["family"] for r in reg.rows() if r["status"] == "ok"} >= BUILTINS
    assert reg.get("objective", "grpo").meta["accepts"] == ("text",)


def test_disable(monkeypatch):
    reg = Registry(disabled={"prm"})
    assert reg.plugins["prm"].status == "disabled"
    with pytest.raises(UsageError, match="disabled"):
        reg.get("reward", "prm")
    assert reg.get("reward", "verifier").name == "verifier"


def test_broken_plugin_is_isolated(tmp_path, monkeypatch):
    (tmp_path / "boom_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "dup_plugin.py").write_text(textwrap.dedent("""
        from rlx.hookspecs import hookimpl
        @hookimpl
        def rlx_register_objectives(register):
            register("grpo", "x:y")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [*entry_points(group="rlx"), EntryPoint("boom", "boom_plugin", "rlx"),
           EntryPoint("dup", "dup_plugin", "rlx")]
    reg = Registry(eps=eps, disabled=set())
    assert reg.plugins["boom"].status == "error" and "boom at import" in reg.plugins["boom"].error
    assert reg.plugins["dup"].status == "error" and "already registered" in reg.plugins["dup"].error
    assert reg.get("objective", "grpo").plugin == "grpo"
    assert {r["name"] for r in reg.rows() if r["status"] == "ok"} >= BUILTINS


def test_listing_does_not_import_heavy_modules():
    code = textwrap.dedent("""
        import sys
        from rlx.cli.main import main
        for argv in (["--help"], ["plugins", "list"], ["plugins", "show", "grpo"]):
            try:
                main(argv)
            except SystemExit as e:
                assert e.code in (0, None), e.code
        heavy = [m for m in ("torch", "transformers", "mlflow", "accelerate") if m in sys.modules]
        print("HEAVY", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-500:]


def test_plugins_show_lists_fields(tmp_path):
    from _cli import rlx

    proc = rlx("plugins", "show", "grpo", "--json", home=tmp_path)
    import json

    comp = json.loads(proc.stdout)[0]
    fields = {f["field"]: f for f in comp["fields"]}
    assert fields["loss_type"]["type"] == "'grpo' | 'bnpo' | 'dr_grpo' | 'dapo'"
    assert fields["beta"]["default"] == 0.04 and fields["beta"]["description"]
