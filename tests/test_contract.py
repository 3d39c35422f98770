"""The registration contract: fields checked at registration, defaults chosen by the
registrations, declared dependencies between plugins, kinds that must exist, and the
``[plugins.<name>]`` tables of lifecycle-hook plugins. In-process, no run."""

from __future__ import annotations

import textwrap
from importlib.metadata import EntryPoint

import pytest
from _cli import make_plugin, rlx

from rlx.config import compose, resolve
from rlx.errors import ConfigError, UsageError
from rlx.registry import get_registry
from rlx.registry.plugins import Registry


def test_defaults_follow_the_components():
    reg = get_registry()
    names = resolve(compose(None, {"env": "gym"}), reg).names  # a control env: its kind's defaults
    assert (names["objective"], names["policy"], names["kind"]) == ("ppo", "mlp", "control")
    names = resolve(compose(None, {"objective": "dpo"}), reg).names  # dpo accepts preference data only
    assert (names["env"], names["policy"], names["kind"]) == ("preferences", "tiny", "preference")
    names = resolve(compose(None, {"objective": "dqn"}), reg).names
    assert (names["env"], names["policy"]) == ("gym", "mlp")
    names = resolve(compose(None, {}), reg).names  # the objective registered as the default
    assert (names["objective"], names["env"], names["policy"], names["reward"]) == (
        "grpo", "arithmetic", "tiny", "verifier")


def test_mismatches_fail_before_anything_is_built():
    reg = get_registry()
    with pytest.raises(UsageError, match=r"policy 'tiny' implements the 'lm' interface; control environments like "
                                         r"'gym' need a 'control' policy such as --policy mlp"):
        resolve(compose(None, {"objective": "ppo", "env": "gym", "policy": "tiny"}), reg)
    with pytest.raises(UsageError, match=r"objective 'sft' does not accept control environments"):
        resolve(compose(None, {"objective": "sft", "env": "gym"}), reg)


def _registry_with(tmp_path, monkeypatch, name: str, source: str) -> Registry:
    """The built-ins plus one hand-made plugin module ``name``."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    from importlib.metadata import entry_points

    eps = list(entry_points(group="rlx")) + [EntryPoint(name=name, value=name, group="rlx")]
    return Registry(eps, disabled=set())


def test_registration_fields_are_checked(tmp_path, monkeypatch):
    reg = _registry_with(tmp_path, monkeypatch, "typo_plugin", '''
        from rlx import hookimpl

        @hookimpl
        def rlx_register_environments(register):
            register("typo-env", "x:Y", kidn="text")
    ''')
    info = reg.plugins["typo_plugin"]
    assert info.status == "error"
    assert "environment 'typo-env': unknown registration field 'kidn'; allowed: kind, default_reward, task_field, requires" \
        in info.error
    assert reg.get("objective", "grpo").meta["accepts"] == ("text",)  # the others are unaffected


def test_an_environment_of_an_unknown_kind_is_refused(tmp_path, monkeypatch):
    reg = _registry_with(tmp_path, monkeypatch, "bandit_env_only", '''
        from rlx import hookimpl

        @hookimpl
        def rlx_register_environments(register):
            register("slots", "x:Y", kind="bandit")
    ''')
    with pytest.raises(UsageError, match=r"environment 'slots' is of kind 'bandit', which no loaded plugin "
                                         r"provides \(kinds: control, preference, text\); install or enable the plugin"):
        resolve(compose(None, {"objective": "grpo", "env": "slots"}), reg)


def test_a_disabled_dependency_makes_its_dependents_unavailable():
    reg = Registry(disabled={"arithmetic"})
    with pytest.raises(UsageError, match=r"environment 'preferences' is unavailable: it needs plugin 'arithmetic', "
                                         r"which is disabled by RLX_DISABLE_PLUGINS"):
        reg.get("environment", "preferences")
    row = next(r for r in reg.rows() if r["name"] == "preferences")
    assert row["status"].startswith("unavailable: it needs plugin 'arithmetic'")
    assert reg.get("objective", "grpo").name == "grpo"


def test_plugin_settings_tables(tmp_path, monkeypatch):
    reg = _registry_with(tmp_path, monkeypatch, "stopper", '''
        from rlx import hookimpl

        @hookimpl
        def rlx_step_end(step):
            return False
    ''')
    cfg = resolve(compose(None, {}, ["plugins.stopper.patience=3"]), reg)
    assert cfg.plugins == {"stopper": {"patience": 3}}
    assert cfg.to_dict()["plugins"] == {"stopper": {"patience": 3}}
    assert resolve(cfg.to_dict(), reg).plugins == cfg.plugins  # --dry-run output re-creates it
    with pytest.raises(ConfigError, match=r"plugins.stoper: plugin 'stoper' is not installed; did you mean 'stopper'"):
        resolve(compose(None, {}, ["plugins.stoper.patience=3"]), reg)


def test_show_a_plugin_of_hooks_only_and_a_core_section(tmp_path):
    site = make_plugin(tmp_path / "site", "watcher", textwrap.dedent('''
        from rlx.hookspecs import hookimpl

        @hookimpl
        def rlx_step_end(step, metrics):
            return None
    '''))
    (tmp_path / "home").mkdir()
    proc = rlx("plugins", "show", "watcher", home=tmp_path / "home", paths=[site])
    assert proc.returncode == 0, proc.stderr
    assert "plugin watcher" in proc.stdout and "hooks: rlx_step_end" in proc.stdout
    proc = rlx("plugins", "show", "optim", home=tmp_path / "home")
    assert proc.returncode == 0 and "lr" in proc.stdout and "max_grad_norm" in proc.stdout
