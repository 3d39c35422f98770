"""Tensor comparison for the hand-computed math tests."""

from __future__ import annotations

import torch


def close(actual, expected, atol: float = 1e-6) -> None:
    actual = torch.as_tensor(actual, dtype=torch.double)
    expected = torch.as_tensor(expected, dtype=torch.double)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol, rtol=0, equal_nan=True), (actual, expected)
