"""Uncertainty of σ: bootstrap intervals, permutation p-values and their Benjamini–Hochberg adjustment."""

import numpy as np
import pandas as pd
import pytest

import significance as bench   # bench/significance.py, on the path through conftest
from robustness_bias.analysis import metrics, significance
from robustness_bias.pipeline import run
from robustness_bias.analysis.summary import group_summary, groups_without_sigma


def test_benjamini_hochberg_by_hand():
    adjusted = significance.benjamini_hochberg([0.01, 0.04, 0.03, 0.5, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert np.isnan(adjusted[4])


def _audit(seed, n=2000, n_groups=20, effect=1.0):
    rng = np.random.default_rng(seed)
    groups = rng.integers(n_groups, size=n)
    distance = rng.exponential(size=n) * np.where(groups == 0, effect, 1.0)
    correct = rng.random(n) < 0.9
    return distance, correct, groups, metrics.pooled_tau_max(distance, correct)


def test_permutation_p_values_are_calibrated_when_groups_are_random():
    p_values = np.concatenate([significance.permutation_p_values(*_audit(seed)[:3], _audit(seed)[3], permutations=400, seed=seed)
                               for seed in range(10)])
    assert len(p_values) == 200
    share = np.mean(p_values < 0.05)
    assert 0.01 <= share <= 0.10, share


def test_observed_sigma_and_interval_match_the_metric():
    distance, correct, groups, tau_max = _audit(1, effect=0.6)
    low, high = significance.bootstrap_sigma(distance, correct, groups, tau_max, resamples=500, seed=3)
    observed = [metrics.sigma(distance, correct, groups == g, tau_max) for g in range(20)]
    inside = (low <= observed) & (observed <= high)
    assert inside.mean() >= 0.9
    assert high[0] < 0 and low[0] < observed[0] < high[0]            # the planted group lies below 0
    p = significance.permutation_p_values(distance, correct, groups, tau_max, permutations=500, seed=3)
    assert p[0] == pytest.approx(1 / 501)


@pytest.mark.parametrize("scenario, simulations, floor", [("20 counting points", 4000, 0.93),
                                                           ("150 counting points", 8000, 0.94),
                                                           ("20, failures 20% / 5%", 800, 0.93),
                                                           ("20, capped (~60% at the cap)", 800, 0.93)])
def test_interval_covers_the_true_sigma(scenario, simulations, floor):
    """95% intervals of σ for a group of ~20 or ~150 counting points against ~360 (issue 33's set-up), also with
    failed attacks (+inf) and with distances piled at a cap; the true σ is exact (bench/significance.py).
    The percentile bootstrap this replaced fails the first (0.912) and the third (0.926); the bootstrap-t
    covers 0.943 / 0.948 / 0.967 / 0.964 over 5,000 other audits (docs/design.md "Intervals of σ"), at which
    a fresh seed fails this test with probability about 10⁻³ (binomial tails, mostly the ~150 case)."""
    shares = bench.coverage(bench.SCENARIOS[scenario], simulations, seed=33)
    assert shares["covered"] >= floor, shares


def test_intervals_are_reproducible_with_a_seed():
    distance, correct, groups, tau_max = _audit(2)
    first = significance.bootstrap_sigma(distance, correct, groups, tau_max, resamples=200, seed=7)
    again = significance.bootstrap_sigma(distance, correct, groups, tau_max, resamples=200, seed=7)
    other = significance.bootstrap_sigma(distance, correct, groups, tau_max, resamples=200, seed=8)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_small_groups_get_no_sigma():
    records = pd.DataFrame({"estimator": "exact", "distance": np.r_[np.linspace(0.1, 1, 40), [0.5, 0.6]],
                            "success": True, "correct": True,
                            "site": pd.Categorical(["big"] * 40 + ["tiny"] * 2)})
    table = group_summary(records, ["site"], min_group_size=5).set_index("group")
    assert table.loc["tiny", "too_small"] and np.isnan(table.loc["tiny", "sigma"])
    assert not table.loc["big", "too_small"] and np.isfinite(table.loc["big", "sigma"])
    assert groups_without_sigma(group_summary(records, ["site"], min_group_size=5)) == ["site=tiny by exact"]


def test_planted_group_is_significant_in_the_audit(make_config, tmp_path):
    run(make_config("experiment=synthetic_group", "logger=none"))
    summary = pd.read_parquet(tmp_path / "audits" / "final" / "summary.parquet")
    planted = summary[(summary["partition"] == "group") & (summary["group"] == "planted")].iloc[0]
    assert planted["p_adjusted"] < 0.01
    assert planted["sigma_low"] < planted["sigma"] < planted["sigma_high"] < 0


def test_permutation_test_keeps_its_level_when_group_accuracies_differ():
    """True σ = 0, but the group is misclassified half the time against 3% for the rest: shuffling
    membership over every point would hand the group ~58 counting points instead of ~30, narrow the
    null distribution and reject 11–15% of the time. Shuffling among counting points keeps α."""
    simulations, alpha, rejected = 1000, 0.05, 0
    rng = np.random.default_rng(0)
    for seed in range(simulations):
        groups = np.r_[np.zeros(60, int), np.ones(940, int)]
        correct = rng.random(1000) < np.where(groups == 0, 0.5, 0.97)
        distance = rng.exponential(size=1000)
        p = significance.permutation_p_values(distance, correct, groups, metrics.pooled_tau_max(distance, correct),
                                      permutations=200, seed=seed)
        rejected += p[0] < alpha
    error = np.sqrt(alpha * (1 - alpha) / simulations)
    assert abs(rejected / simulations - alpha) < 3 * error, rejected / simulations
