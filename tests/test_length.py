"""The ``length`` reward by hand, and composed with ``verifier`` by weight in a real run."""

from __future__ import annotations

import pytest
import torch

from rlx.batch import Batch


def test_length_reward_by_hand():
    from rlx.plugins.length.config import LengthConfig
    from rlx.plugins.length.reward import Length

    batch = Batch({"mask": torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])})  # lengths 3 and 1
    assert torch.allclose(Length(LengthConfig(target=2)).score(batch), torch.tensor([-0.5, -0.5]))
    assert torch.allclose(Length(LengthConfig(per_token=0.1)).score(batch), torch.tensor([-0.3, -0.1]))


@pytest.mark.slow
def test_length_composes_with_verifier_by_weight(tmp_path):
    from _cli import latest_run, metric_history, rlx

    proc = rlx("run", "--objective", "grpo", "--reward", "verifier", "--reward", "length",
               "--set", "reward.length.target=24", "--set", "reward.length.weight=0.2", "--steps", "2",
               "--set", "run.batch_size=4", "--set", "run.eval_every=0", "--set", "env.eval_size=16",
               "--set", "run.threads=1", "--no-progress", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run, client = latest_run(tmp_path)
    hist = {k: [m.value for m in metric_history(client, run["mlflow_run_id"], f"reward/{k}")]
            for k in ("mean", "verifier", "length")}
    assert len(hist["length"]) == 2 and all(v <= 0 for v in hist["length"])
    for mean, ver, length in zip(hist["mean"], hist["verifier"], hist["length"]):
        assert mean == pytest.approx(ver + 0.2 * length, abs=1e-5)
