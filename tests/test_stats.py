"""rlx.stats against the definitions of "Deep RL at the Edge of the Statistical Precipice"
and against numbers computed by its library, rliable."""

from __future__ import annotations

import time

import numpy as np
import pytest

from rlx import stats

# Reference numbers from rliable 1.2.0 (with arch 7.2.0, pandas 2.3.3, numpy 2.4.6, scipy
# 1.17.1), computed once outside the suite by a script that ran, for these matrices:
#   metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.probability_of_improvement(x, y)
#   np.random.seed(0); library.get_interval_estimates({k: x}, lambda x: np.array([f(x)]),
#                                                     reps=50000)          # IQM and mean CIs
#   np.random.seed(0); library.get_interval_estimates({k: [x, y]}, PI, reps=5000)   # PI CIs
#   np.random.seed(0); library.create_performance_profile({k: A}, [0.5, 0.6, 0.7], reps=50000)
# rliable's draws come from np.random, ours from np.random.default_rng: the same bootstrap
# with other random numbers, so the CI bounds are compared within a tolerance.
A = np.array([[0.62], [0.71], [0.55], [0.80], [0.68]])
B = np.array([[0.50], [0.58], [0.61], [0.47], [0.66]])
M = np.array([[0.1, 10.0, 3.0], [0.4, 12.0, 2.5], [0.3, 11.0, 4.0], [0.9, 15.0, 3.5],
              [0.5, 9.0, 5.0], [0.7, 14.0, 1.0]])  # 6 runs x 3 tasks
N = np.array([[0.2, 11.0, 2.0], [0.35, 10.5, 3.1], [0.6, 12.5, 2.2], [0.45, 9.5, 4.2],
              [0.15, 13.0, 2.8]])  # 5 runs x 3 tasks
T = np.array([[1.0], [1.0], [2.0], [3.0]])  # ties with U
U = np.array([[1.0], [2.0], [2.0], [0.5]])

RLIABLE_IQM = {"A": 0.67, "B": 0.5633333333333334, "M": 3.96, "N": 3.927777777777778}
RLIABLE_MEAN = {"A": 0.672, "B": 0.564, "M": 5.1611111111111105, "N": 4.836666666666667}
RLIABLE_PI = {("A", "B"): 0.84, ("B", "A"): 0.16, ("M", "N"): 0.5944444444444444, ("T", "U"): 0.625}
RLIABLE_IQM_CI = {"A": (0.57333333, 0.77), "B": (0.48, 0.64333333), "M": (3.34, 4.69)}
RLIABLE_MEAN_CI = {"A": (0.602, 0.746), "B": (0.504, 0.624), "M": (4.50555556, 5.82222222)}
RLIABLE_PI_CI = {("A", "B"): (0.52, 1.0), ("M", "N"): (0.38888889, 0.79444444)}
RLIABLE_PROFILE_A = {"fraction": [1.0, 0.8, 0.4], "low": [1.0, 0.4, 0.0], "high": [1.0, 1.0, 0.8]}
MATS = {"A": A, "B": B, "M": M, "N": N, "T": T, "U": U}


@pytest.mark.parametrize("name", ["A", "B", "M", "N"])
def test_point_estimates_match_rliable(name):
    assert stats.iqm(MATS[name]) == pytest.approx(RLIABLE_IQM[name], abs=1e-12)
    assert stats.mean(MATS[name]) == pytest.approx(RLIABLE_MEAN[name], abs=1e-12)


@pytest.mark.parametrize("pair", list(RLIABLE_PI))
def test_probability_of_improvement_matches_rliable(pair):
    x, y = (MATS[k] for k in pair)
    assert stats.probability_of_improvement(x, y) == pytest.approx(RLIABLE_PI[pair], abs=1e-12)


@pytest.mark.parametrize("name", ["A", "B", "M"])
def test_bootstrap_cis_match_rliable(name):
    for fn, ref in ((stats.iqm, RLIABLE_IQM_CI), (stats.mean, RLIABLE_MEAN_CI)):
        low, high = stats.stratified_bootstrap_ci(MATS[name], fn, reps=50000, seed=0)
        span = ref[name][1] - ref[name][0]
        assert low == pytest.approx(ref[name][0], abs=0.02 * span + 1e-9), fn.__name__
        assert high == pytest.approx(ref[name][1], abs=0.02 * span + 1e-9), fn.__name__


@pytest.mark.parametrize("pair", list(RLIABLE_PI_CI))
def test_probability_of_improvement_ci_matches_rliable(pair):
    x, y = (MATS[k] for k in pair)
    low, high = stats.probability_of_improvement_ci(x, y, reps=5000, seed=0)
    assert low == pytest.approx(RLIABLE_PI_CI[pair][0], abs=0.02)
    assert high == pytest.approx(RLIABLE_PI_CI[pair][1], abs=0.02)


def test_performance_profile_matches_rliable():
    p = stats.performance_profile(A, [0.5, 0.6, 0.7], reps=20000, seed=0)
    assert p.fraction.tolist() == RLIABLE_PROFILE_A["fraction"]
    np.testing.assert_allclose(p.low, RLIABLE_PROFILE_A["low"], atol=1e-9)
    np.testing.assert_allclose(p.high, RLIABLE_PROFILE_A["high"], atol=1e-9)


# -- the definitions, by hand ----------------------------------------------------------------

def test_iqm_by_hand():
    # 8 scores: int(0.25 * 8) = 2 cut at each end, mean of the middle 4
    x = np.array([100.0, 1, 2, 3, 4, 5, 6, -50])
    assert stats.iqm(x) == pytest.approx((2 + 3 + 4 + 5) / 4)
    # pooled over runs and tasks: the same 8 scores as a 4 x 2 matrix
    assert stats.iqm(x.reshape(4, 2)) == pytest.approx(3.5)
    # 5 scores: int(1.25) = 1 cut at each end
    assert stats.iqm([0.9, 0.1, 0.5, 0.3, 0.7]) == pytest.approx((0.3 + 0.5 + 0.7) / 3)
    assert stats.median([1.0, 2, 10]) == 2.0
    assert stats.std([1.0, 3.0]) == pytest.approx(np.sqrt(2.0))
    assert np.isnan(stats.std([1.0]))


def test_iqm_over_axes_keeps_the_others():
    curves = np.arange(2 * 1 * 3, dtype=float).reshape(2, 1, 3)  # runs, tasks, steps
    np.testing.assert_allclose(stats.iqm(curves, axis=(0, 1)), [1.5, 2.5, 3.5])


def test_probability_of_improvement_definition():
    assert stats.probability_of_improvement([3.0, 4, 5], [0.0, 1, 2]) == 1.0
    assert stats.probability_of_improvement([0.0, 1, 2], [3.0, 4, 5]) == 0.0
    assert stats.probability_of_improvement(A, A) == 0.5
    # ties count 1/2: x=1 vs y=1 is a tie, x=2 beats y=1: (0.5 + 1) / 2
    assert stats.probability_of_improvement([1.0, 2.0], [1.0]) == pytest.approx(0.75)
    # averaged over tasks: task 0 all wins, task 1 all losses
    assert stats.probability_of_improvement([[5.0, 0.0]], [[1.0, 1.0]]) == pytest.approx(0.5)
    assert stats.probability_of_improvement(A, B) + stats.probability_of_improvement(B, A) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.probability_of_improvement(M, A)  # 3 tasks against 1


def test_ci_contains_the_point_estimate_and_shrinks_with_runs():
    rng = np.random.default_rng(7)
    few, many = rng.normal(size=(5, 1)), rng.normal(size=(200, 1))
    for x in (few, many, M):
        for fn in (stats.iqm, stats.mean, stats.median):
            low, high = stats.stratified_bootstrap_ci(x, fn)
            assert low <= fn(x) <= high
            assert low < high
    width = {k: np.subtract(*stats.stratified_bootstrap_ci(x, stats.iqm)[::-1]) for k, x in
             (("few", few), ("many", many))}
    assert width["many"] < width["few"] / 3  # about 1/sqrt(40) as wide


def test_ci_narrows_with_confidence():
    low95, high95 = stats.stratified_bootstrap_ci(A, stats.mean, confidence=0.95)
    low50, high50 = stats.stratified_bootstrap_ci(A, stats.mean, confidence=0.5)
    assert low95 < low50 < high50 < high95


def test_bootstrap_is_reproducible_with_its_seed():
    assert stats.stratified_bootstrap_ci(A, stats.iqm, seed=3) == stats.stratified_bootstrap_ci(A, stats.iqm, seed=3)
    draws = {s: stats.bootstrap_draws(A, stats.iqm, reps=500, seed=s) for s in (1, 2)}
    assert not np.array_equal(draws[1], draws[2])
    np.testing.assert_array_equal(draws[1], stats.bootstrap_draws(A, stats.iqm, reps=500, seed=1))
    assert stats.probability_of_improvement_ci(A, B, seed=4) == stats.probability_of_improvement_ci(A, B, seed=4)


def test_bootstrap_resamples_within_each_task():
    # every resample draws each task's scores from that task only: task 1's mean stays in 100..104
    x = np.column_stack([np.arange(5.0), 100 + np.arange(5.0)])
    draws = stats.bootstrap_draws(x, lambda v, axis: v.mean(axis=1), reps=300)  # per-task means
    assert draws.shape == (300, 2)
    assert draws[:, 0].min() >= 0 and draws[:, 0].max() <= 4
    assert draws[:, 1].min() >= 100 and draws[:, 1].max() <= 104
    assert draws[:, 0].std() > 0


def test_single_run_has_no_interval():
    low, high = stats.stratified_bootstrap_ci([[0.5]], stats.iqm)
    assert np.isnan(low) and np.isnan(high)
    assert all(np.isnan(stats.probability_of_improvement_ci([[0.5]], B)))


def test_disjoint_groups_have_a_certain_interval():
    low, high = stats.probability_of_improvement_ci([3.0, 4, 5], [0.0, 1, 2])
    assert (low, high) == (1.0, 1.0)


def test_performance_profile_definition():
    # 2 runs x 2 tasks: task 0 scores 1 and 3, task 1 scores 2 and 4
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    p = stats.performance_profile(x, [0.0, 1.5, 2.5, 3.5, 5.0], reps=200)
    np.testing.assert_allclose(p.fraction, [1.0, 0.75, 0.5, 0.25, 0.0])
    assert np.all(p.low <= p.fraction) and np.all(p.fraction <= p.high)
    below = stats.performance_profile(x, [2.5], reps=200, lower_is_better=True)
    assert below.fraction.tolist() == [0.5]


def test_normalize_min_max_per_task():
    a = np.array([[0.0, 10.0], [1.0, 30.0]])
    b = np.array([[0.5, 20.0], [0.5, 20.0]])
    out = stats.normalize({"a": a, "b": b})
    np.testing.assert_allclose(out["a"], [[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(out["b"], [[0.5, 0.5], [0.5, 0.5]])
    flipped = stats.normalize({"a": a, "b": b}, lower_is_better=True)
    np.testing.assert_allclose(flipped["a"], [[1.0, 1.0], [0.0, 0.0]])
    given = stats.normalize({"a": a}, bounds=[(0.0, 2.0), (0.0, 100.0)])
    np.testing.assert_allclose(given["a"], [[0.0, 0.1], [0.5, 0.3]])
    constant = stats.normalize({"a": np.ones((2, 1))})
    np.testing.assert_allclose(constant["a"], [[0.0], [0.0]])
    with pytest.raises(ValueError):
        stats.normalize({"a": a}, bounds=[(0.0, 1.0)])


def test_verdict_wording():
    assert stats.verdict("dapo", "grpo", 0.6, 0.9, 5) == "dapo better than grpo"
    assert stats.verdict("dapo", "grpo", 0.1, 0.45, 5) == "grpo better than dapo"
    assert stats.verdict("dapo", "grpo", 0.4, 0.7, 5) == "not distinguishable at 5 seeds"
    assert stats.verdict("dapo", "grpo", 0.5, 0.9, 3) == "not distinguishable at 3 seeds"  # 0.5 is not above
    assert stats.verdict("dapo", "grpo", float("nan"), float("nan"), 1) == "not distinguishable at 1 seed"
    assert stats.verdict_kind(0.51, 1.0) == "a" and stats.verdict_kind(0.0, 0.49) == "b"


def test_bad_shapes_and_confidence():
    with pytest.raises(ValueError):
        stats.as_matrix(np.zeros((0, 1)))
    with pytest.raises(ValueError):
        stats.stratified_bootstrap_ci(A, stats.iqm, confidence=1.5)


def test_bootstrap_is_fast():
    x = np.random.default_rng(0).normal(size=(5, 1))
    y = x + 1
    stats.stratified_bootstrap_ci(x, stats.iqm)  # imports scipy
    start = time.perf_counter()
    for fn in (stats.iqm, stats.mean, stats.median):
        stats.stratified_bootstrap_ci(x, fn, reps=2000)
    stats.probability_of_improvement_ci(x, y, reps=2000)
    assert time.perf_counter() - start < 0.25  # about 5 ms here; generous for a loaded machine
