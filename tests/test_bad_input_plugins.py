"""Plugins that misbehave: a factory that returns the wrong type, and a module whose
import never finishes (it must not hang `rlx runs list`, `rlx --help` or `rlx run`)."""

from __future__ import annotations

import sys
import textwrap
import time
import types
from importlib.metadata import EntryPoint, entry_points

import pytest
from _cli import make_plugin, rlx

from rlx.errors import PluginError
from rlx.registry import Registry
from rlx.registry.plugins import ComponentSpec, EmptyConfig

HANGS = "import time\ntime.sleep(10**6)\n"
INTERFACES = {"objective": "rlx.objective:Objective", "reward": "rlx.reward:RewardSource",
              "environment": "rlx.environment:Environment", "policy": "rlx.policy:Policy",
              "kind": "rlx.kind:EnvironmentKind", "launcher": "rlx.launcher:Launcher"}


@pytest.mark.parametrize("returned,words", [
    ("a string", "returned str 'a string'"),
    ({"a": 1}, "returned dict {'a': 1}"),
    (None, "returned NoneType None"),
])
def test_factory_returning_wrong_type(returned, words):
    spec = ComponentSpec("reward", "odd", lambda config, **kw: returned, EmptyConfig, "oddity", "0.1")
    with pytest.raises(PluginError, match=rf"plugin 'oddity': reward 'odd' .*{words}, not a "
                                          r"rlx.reward.RewardSource; .*RLX_DISABLE_PLUGINS=oddity"):
        spec.build(EmptyConfig(), env=None, name="odd")


def test_factory_of_another_kind_is_refused():
    from rlx.plugins.arithmetic.env import ArithmeticEnv

    spec = ComponentSpec("policy", "envy", ArithmeticEnv, EmptyConfig, "envy", "0.1")
    with pytest.raises(PluginError, match=r"policy 'envy' .*returned ArithmeticEnv .*not a rlx.policy.Policy"):
        spec.build(None)


def test_builtin_factories_implement_their_interface():
    """What ``ComponentSpec.build`` checks, for every built-in (mlp, tiny and hf included)
    without building them: each factory is a class deriving from its kind's interface."""
    import importlib

    reg = Registry()
    checked = 0
    for kind, specs in reg.components.items():
        module, name = INTERFACES[kind].split(":")
        interface = getattr(importlib.import_module(module), name)
        for spec in specs.values():
            if reg.plugins[spec.plugin].distribution != "rlx":  # built-ins only
                continue
            factory = spec.load()
            assert isinstance(factory, type) and issubclass(factory, interface), (kind, spec.name, factory)
            checked += 1
    assert checked >= 20
    assert {"mlp", "tiny", "hf"} <= set(reg.components["policy"])


def test_builtins_build_and_pass_the_check():
    """The light built-ins, built for real through ``build``."""
    reg = Registry()
    env_spec = reg.get("environment", "arithmetic")
    env = env_spec.build(env_spec.config(), seed=0)
    for name in ("verifier", "length"):
        spec = reg.get("reward", name)
        assert spec.build(spec.config(), env=env, name=name).name == name
    obj = reg.get("objective", "grpo")
    assert obj.build(obj.config(), max_new_tokens=8, env_kind="text", env=env) is not None


# -- a plugin whose import never finishes -------------------------------------------------

def test_stuck_import_is_abandoned_and_never_retried(tmp_path, monkeypatch):
    """In-process: the import runs in a thread that the test releases at the end."""
    gate = types.ModuleType("_rlx_test_gate")
    import threading

    gate.release = threading.Event()
    monkeypatch.setitem(sys.modules, "_rlx_test_gate", gate)
    (tmp_path / "stuck_rlx_plugin.py").write_text("import _rlx_test_gate\n_rlx_test_gate.release.wait()\n")
    (tmp_path / "after_rlx_plugin.py").write_text(textwrap.dedent("""
        from rlx.hookspecs import hookimpl
        @hookimpl
        def rlx_register_rewards(register):
            register("after", "rlx.plugins.verifier.reward:Verifier")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RLX_PLUGIN_TIMEOUT", "0.5")
    # imported in this order: the ones after the stuck import still load, and a second
    # entry point into the same module is not waited for again
    eps = [*entry_points(group="rlx"), EntryPoint("stuck", "stuck_rlx_plugin", "rlx"),
           EntryPoint("stuck_too", "stuck_rlx_plugin:rlx_register_rewards", "rlx"),
           EntryPoint("zz_after", "after_rlx_plugin", "rlx")]
    # where imports are not abandoned, this test would wait forever: let it fail instead
    watchdog = threading.Timer(20, gate.release.set)
    watchdog.start()
    try:
        started = time.monotonic()
        reg = Registry(eps=eps, disabled=set())
        assert time.monotonic() - started < 15
        assert reg.plugins["stuck"].status == "error"
        assert reg.plugins["stuck"].error == "import did not finish within 0.5 s (RLX_PLUGIN_TIMEOUT)"
        assert reg.plugins["stuck_too"].error == reg.plugins["stuck"].error
        assert reg.get("objective", "grpo").plugin == "grpo"  # the others work
        assert reg.plugins["zz_after"].status == "ok", reg.plugins["zz_after"].error
        assert reg.get("reward", "after").plugin == "zz_after"
        # a second registry in this process does not wait again on the held import lock
        started = time.monotonic()
        again = Registry(eps=eps, disabled=set())
        assert time.monotonic() - started < 0.5
        assert again.plugins["stuck"].error == reg.plugins["stuck"].error
    finally:
        watchdog.cancel()
        gate.release.set()


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan"])
def test_plugin_timeout_must_be_positive_seconds(monkeypatch, value):
    from rlx.errors import UsageError
    from rlx.registry.plugins import import_timeout

    monkeypatch.setenv("RLX_PLUGIN_TIMEOUT", value)
    with pytest.raises(UsageError, match=rf"RLX_PLUGIN_TIMEOUT='{value}' is not a number of seconds; .*greater than 0"):
        import_timeout()


@pytest.fixture(scope="module")
def hanging(tmp_path_factory):
    root = tmp_path_factory.mktemp("hang")
    (root / "home").mkdir()
    return {"home": root / "home", "site": make_plugin(root / "site", "hang", HANGS)}


def test_runs_list_does_not_import_plugins(hanging):
    started = time.monotonic()
    proc = rlx("runs", "list", home=hanging["home"], paths=[hanging["site"]], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 15  # no plugin import at all: no timeout waited
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["plugins", "list"]])
def test_help_and_plugins_list_wait_only_the_timeout(hanging, args):
    started = time.monotonic()
    proc = rlx(*args, home=hanging["home"], paths=[hanging["site"]], timeout=60, RLX_PLUGIN_TIMEOUT="2",
               RLX_PLUGIN_CACHE="0")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 2 + 20
    assert "Traceback" not in proc.stderr
    if args == ["--help"]:
        assert "runs" in proc.stdout and "plugins" in proc.stdout
    else:
        rows = [ln for ln in proc.stdout.splitlines() if " hang " in ln]
        assert rows and "error: import did not finish within 2 s" in rows[0], proc.stdout
        assert any(" grpo " in ln and " ok " in ln for ln in proc.stdout.splitlines())


def test_run_goes_on_without_the_stuck_plugin(hanging):
    proc = rlx("run", "--dry-run", home=hanging["home"], paths=[hanging["site"]], timeout=60, RLX_PLUGIN_TIMEOUT="2")
    assert proc.returncode == 0, proc.stderr
    assert '"objective"' in proc.stdout


def test_plugin_commands_still_load_when_needed(tmp_path):
    """A plugin's own command is found when it is the first argument, and not looked for
    when a built-in is."""
    site = make_plugin(tmp_path / "site", "hello", textwrap.dedent('''
        from rlx.hookspecs import hookimpl
        @hookimpl
        def rlx_register_commands(app):
            @app.command("hello")
            def hello():
                print("hello from a plugin")
    '''))
    proc = rlx("hello", home=tmp_path, paths=[site])
    assert proc.returncode == 0 and "hello from a plugin" in proc.stdout, proc.stderr
    proc = rlx("--help", home=tmp_path, paths=[site])
    assert proc.returncode == 0 and "hello" in proc.stdout, proc.stderr
