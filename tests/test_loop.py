"""The training loop in-process, with the fake components of ``loop_fakes`` (tiny tensors,
no models, no subprocess): evaluation and checkpoint schedules, non-finite skips, early
stops by a hook, group sizes, the zero-gradient warning and resume after Ctrl-C.

Tracking is off except in the one test that reads the MLflow tags."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import loop_fakes
import pytest
import torch
from loop_fakes import events

from rlx.config import compose, resolve
from rlx.errors import RlxError, RunKilled
from rlx.loop import NonFinite, Resume, train
from rlx.registry.plugins import Registry

EPS = [EntryPoint("fakes", "loop_fakes", "rlx"), EntryPoint("stopper", "loop_fakes:STOPPER", "rlx"),
       EntryPoint("interrupter", "loop_fakes:INTERRUPTER", "rlx")]


@pytest.fixture(scope="module")
def registry():
    reg = Registry(eps=EPS, disabled=set())
    assert {i.name: i.status for i in reg.plugins.values()} == {"fakes": "ok", "stopper": "ok", "interrupter": "ok"}
    return reg


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RLX_HOME", str(tmp_path))
    monkeypatch.setenv("RLX_TRACKING", "off")
    for var in ("MLFLOW_TRACKING_URI", "RLX_CATALOG_URL", "RLX_RUN_ID", "RLX_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    loop_fakes.EVENTS.clear()
    return tmp_path


def _cfg(registry, *sets: str, objective: str = "fake"):
    raw = compose(flags={"objective": objective}, sets=[
        "run.device=cpu", "run.batch_size=2", "run.eval_every=0", "run.checkpoint_every=0", "optim.lr=0.01", *sets])
    return resolve(raw, registry)


def _train(registry, *sets: str, objective: str = "fake", **kwargs):
    return train(_cfg(registry, *sets, objective=objective), registry, progress=False, **kwargs)


def _checkpoints(home, run_id: str) -> list[int]:
    folder = home / "runs" / run_id / "checkpoints"
    return sorted(int(p.name[len("step_"):]) for p in folder.iterdir() if p.name.startswith("step_"))


@pytest.mark.parametrize("steps, every, evaluated", [
    (7, 3, [0, 3, 6, 7]),  # before, every 3 steps, at the end
    (6, 3, [0, 3, 6]),  # the last step is a multiple: evaluated once, not twice
    (4, 0, [0, 4]),  # only before and after training
    (0, 3, [0]),  # no training: one evaluation of the untrained policy, not two
])
def test_evaluation_schedule(registry, steps, every, evaluated):
    result = _train(registry, f"run.steps={steps}", f"run.eval_every={every}")
    assert result.status == "FINISHED"
    assert [s for s, in events("evaluate")] == evaluated
    assert [s for s, *_ in events("collect")] == list(range(1, steps + 1))
    assert result.metrics["eval/score"] == pytest.approx(float(torch.load(
        f"{result.policy_dir}/model.pt")["weight"].sum()), abs=1e-6)  # the final evaluation is of the final policy


@pytest.mark.parametrize("steps, every, keep, written, kept", [
    (6, 2, 10, [2, 4, 6], [2, 4, 6]),  # the last step is a multiple: written once
    (7, 3, 2, [3, 6, 7], [6, 7]),  # the last step always; the newest `keep` stay
    (3, 0, 2, [3], [3]),  # checkpoint_every=0: the last step only
])
def test_checkpoint_cadence(registry, home, steps, every, keep, written, kept):
    result = _train(registry, f"run.steps={steps}", f"run.checkpoint_every={every}", f"run.keep_checkpoints={keep}")
    assert result.status == "FINISHED"
    assert [s for s, in events("checkpoint")] == written
    assert _checkpoints(home, result.run_id) == kept


def test_nonfinite_loss_is_skipped(registry):
    result = _train(registry, "run.steps=5", "objective.nan_at_step=3", "run.on_nonfinite=skip")
    assert result.status == "FINISHED"
    skipped = {step: m["nonfinite/skipped"] for step, m in events("step")}
    assert skipped == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1}
    assert [step for step, m in events("step") if "loss/value" not in m] == [3]  # no update on step 3
    assert result.metrics["nonfinite/skipped"] == 1
    assert torch.isfinite(torch.load(f"{result.policy_dir}/model.pt")["weight"]).all()
    # a reward source's own metrics (RewardSource.metrics) are logged each step under its name
    assert all(m["reward/fake/rows"] > 0 for _, m in events("step"))


def test_gradients_written_by_the_objective_train_as_backward_does(registry):
    """An objective's own gradients (``Objective.gradients``) take the place of its loss's
    backward: the same weights as through autograd; and those of a skipped non-finite loss
    are dropped, not added to the next step's."""
    weights = []
    for by_hand in (False, True):
        loop_fakes.EVENTS.clear()
        result = _train(registry, "run.steps=4", f"objective.by_hand={str(by_hand).lower()}")
        assert (len(events("gradients")) == 4) == by_hand
        weights.append(torch.load(f"{result.policy_dir}/model.pt")["weight"])
    assert torch.allclose(weights[0], weights[1], rtol=1e-6, atol=1e-7)
    loop_fakes.EVENTS.clear()
    result = _train(registry, "run.steps=5", "objective.nan_at_step=3", "run.on_nonfinite=skip",
                    "objective.by_hand=true")
    assert [step for step, m in events("step") if "loss/value" not in m] == [3]
    assert torch.isfinite(torch.load(f"{result.policy_dir}/model.pt")["weight"]).all()


def test_nonfinite_loss_stops_the_run(registry):
    with pytest.raises(RlxError, match=r"non-finite value at step 3: the loss is NaN or Inf") as caught:
        _train(registry, "run.steps=5", "objective.nan_at_step=3", "run.on_nonfinite=stop")
    assert isinstance(caught.value, NonFinite)
    assert [s for s, *_ in events("collect")] == [1, 2, 3]
    assert events("end") == [("FAILED",)]


def test_reward_nan_for_every_sample(registry):
    with pytest.raises(NonFinite, match=r"non-finite value at step 1: reward 'fake' returned NaN for every sample"):
        _train(registry, "run.steps=3", "reward.fake.nan=true", "run.on_nonfinite=stop")
    assert events("loss") == []  # the objective never saw the batch
    loop_fakes.EVENTS.clear()

    result = _train(registry, "run.steps=3", "reward.fake.nan=true", "run.on_nonfinite=skip")
    assert result.status == "FINISHED"
    assert [m["nonfinite/skipped"] for _, m in events("step")] == [1, 2, 3]
    assert events("loss") == []


def test_hook_stops_the_run_early(registry):
    result = _train(registry, "run.steps=6", "run.eval_every=2", "plugins.stopper.at=2")
    assert result.status == "FINISHED"
    assert (result.stopped_by, result.stopped_at_step, result.steps) == ("stopper", 2, 6)
    assert [s for s, *_ in events("collect")] == [1, 2]
    assert [s for s, in events("evaluate")] == [0, 2]  # the final evaluation, not also the scheduled one
    assert [s for s, in events("checkpoint")] == [2]
    assert events("end") == [("FINISHED",)]


def test_early_stop_is_recorded_in_mlflow_and_the_catalog(registry, monkeypatch):
    from mlflow.tracking import MlflowClient

    from rlx import home as rlx_home
    from rlx.registry.catalog import Catalog

    monkeypatch.setenv("RLX_TRACKING", "on")  # the default store: sqlite under RLX_HOME
    monkeypatch.setenv("RLX_TRACKING_WRITER", "thread")  # no second process importing MLflow
    catalog = Catalog(rlx_home.catalog_url())
    # no evaluation metrics and no saved policy: no learning curve or artifacts to log
    result = _train(registry, "run.steps=6", "plugins.stopper.at=2", "env.evaluate=false", "run.save_policy=false",
                    catalog=catalog)
    assert (result.status, result.stopped_by, result.stopped_at_step) == ("FINISHED", "stopper", 2)
    run = MlflowClient(rlx_home.tracking_uri()).get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["rlx.stopped_by"], run.data.tags["rlx.stopped_at_step"]) == ("stopper", "2")
    row = catalog.get_run(result.run_id)
    assert (row.status, row.mlflow_run_id) == ("FINISHED", result.mlflow_run_id)
    assert row.note == "stopped early by plugin 'stopper' after step 2 of 6"


def test_early_stop_checkpoints_once(registry):
    _train(registry, "run.steps=6", "run.checkpoint_every=2", "plugins.stopper.at=2")
    assert [s for s, in events("checkpoint")] == [2]


def test_group_size_from_the_objective_config(registry):
    _train(registry, "run.steps=2", "run.batch_size=3", objective="fake_grouped")
    assert events("collect") == [(1, 4, 12), (2, 4, 12)]  # the kind saw group_size 4: 3 tasks x 4 rows
    assert events("loss") == [(1, [4, 4, 4]), (2, [4, 4, 4])]
    loop_fakes.EVENTS.clear()

    _train(registry, "run.steps=1", "run.batch_size=3")  # no num_generations: groups of 1
    assert events("collect") == [(1, 1, 3)]


def test_zero_gradient_warns_once(registry, capsys):
    _train(registry, "run.steps=5", "objective.zero_grad=true")
    warned = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("warning: the gradient has been exactly 0")]
    assert len(warned) == 1, warned
    assert "(3 steps)" in warned[0] and "samples 1 per task" in warned[0]

    _train(registry, "run.steps=5")
    assert "gradient has been exactly 0" not in capsys.readouterr().err


def test_resume_after_sigint_matches_an_uninterrupted_run(registry, home):
    from rlx import home as rlx_home
    from rlx.registry.catalog import Catalog

    sets = ("run.steps=6", "run.checkpoint_every=0", "run.seed=5")
    straight = _train(registry, *sets)
    want = torch.load(f"{straight.policy_dir}/model.pt")["weight"]
    drawn = {step: m["env/drawn"] for step, m in events("step")}
    loop_fakes.EVENTS.clear()

    catalog = Catalog(rlx_home.catalog_url())
    cfg = _cfg(registry, *sets, "plugins.interrupter.at=3")
    with pytest.raises(RunKilled, match="interrupted by SIGINT after step 3") as caught:
        train(cfg, registry, catalog=catalog, progress=False)
    assert caught.value.signum == 2
    [row] = catalog.list_runs()
    assert row.status == "KILLED"
    assert _checkpoints(home, row.id) == [3]  # written on the way out
    assert [s for s, *_ in events("collect")] == [1, 2, 3]
    loop_fakes.EVENTS.clear()

    assert catalog.claim(row.id)
    resumed = train(cfg, registry, catalog=catalog, progress=False,
                    resume=Resume(row.id, row.mlflow_run_id, row.tracking_uri))
    assert (resumed.status, resumed.run_id) == ("FINISHED", row.id)
    assert [s for s, *_ in events("collect")] == [4, 5, 6]
    assert [s for s, in events("evaluate")] == [6]
    assert {step: m["env/drawn"] for step, m in events("step")} == {s: drawn[s] for s in (4, 5, 6)}
    assert torch.equal(torch.load(f"{resumed.policy_dir}/model.pt")["weight"], want)
    assert catalog.get_run(row.id).status == "FINISHED"


def test_a_second_signal_waits_for_a_held_block():
    """A second signal inside ``Signals.holding()`` (a catalog transaction) does not cut it
    in two: the block finishes, then the run stops at once as it would have."""
    import os
    import signal

    from rlx.interrupts import RunInterrupted, Signals

    finished = []
    with Signals() as signals:
        os.kill(os.getpid(), signal.SIGINT)  # the first: noted, the loop would checkpoint and stop
        assert signals.received == signal.SIGINT
        with pytest.raises(RunInterrupted) as stopped:
            with signals.holding():
                os.kill(os.getpid(), signal.SIGINT)  # the second, mid-transaction
                finished.append("block")
        assert stopped.value.hard and "second signal" in stopped.value.message
        with pytest.raises(RunInterrupted):  # outside a held block it raises where it lands
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert finished == ["block"]
