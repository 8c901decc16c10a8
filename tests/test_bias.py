"""σ, RB and survival curves against values computed by hand."""

import numpy as np
import pytest

from robustness_bias.analysis import metrics

INF, NAN = np.inf, np.nan


def test_survival_conditional_counts_only_correct_points_and_ties_are_not_beyond():
    distance = np.array([0.5, 1.0, 1.0, INF, NAN])
    correct = np.array([True, True, True, True, False])
    d = metrics.effective_distances(distance, correct)
    taus = [0.0, 0.5, 0.75, 1.0, 2.0]
    # 4 attacked points: 0.5, 1, 1 and a censored failure beyond every τ.
    np.testing.assert_allclose(metrics.survival(d, taus), [1.0, 0.75, 0.75, 0.25, 0.25])


def test_survival_drop_policy_removes_failures():
    d = metrics.effective_distances([0.5, 1.0, 1.0, INF, NAN], [True, True, True, True, False], failures="drop")
    np.testing.assert_allclose(metrics.survival(d, [0.0, 0.5, 1.0]), [1.0, 2 / 3, 0.0])


def test_survival_unconditional_counts_misclassified_as_zero():
    d = metrics.effective_distances([0.5, 1.0, 1.0, INF, NAN], [True, True, True, True, False], conditional=False)
    np.testing.assert_allclose(metrics.survival(d, [0.0, 0.5, 1.0]), [4 / 5, 3 / 5, 1 / 5])


def test_survival_of_empty_group_is_nan():
    assert np.isnan(metrics.survival(np.array([]), [0.0, 1.0])).all()


def test_area_is_the_exact_integral_of_the_step_function():
    d = metrics.effective_distances([0.5, 1.0, 1.0, INF], [True] * 4)
    # Î = 1 on [0, 0.5), 3/4 on [0.5, 1): 0.5 + 0.375.
    assert metrics.area_under_survival(d, 1.0) == pytest.approx(0.875)
    # Beyond 1 only the censored failure survives: + 1/4 per unit of τ.
    assert metrics.area_under_survival(d, 3.0) == pytest.approx(0.875 + 0.5)


def test_area_matches_a_fine_riemann_sum():
    rng = np.random.default_rng(0)
    d = rng.exponential(size=200)
    taus = np.linspace(0, 2, 200_001)
    riemann = metrics.survival(d, taus[:-1]).sum() * (taus[1] - taus[0])
    assert metrics.area_under_survival(d, 2.0) == pytest.approx(riemann, abs=1e-4)


def test_sigma_by_hand():
    distance = np.array([0.2, 0.4, 1.0, 1.0, 0.6])
    correct = np.ones(5, bool)
    group = np.array([True, True, False, False, False])
    tau_max = metrics.pooled_tau_max(distance, correct)
    assert tau_max == 1.0
    # AUC_P = 0.3, AUC_rest = 2.6 / 3  →  σ = (0.9 − 2.6) / 2.6
    assert metrics.sigma(distance, correct, group, tau_max) == pytest.approx(-1.7 / 2.6)
    assert metrics.sigma(distance, correct, ~group, tau_max) == pytest.approx((2.6 / 3 - 0.3) / 0.3)


def test_sigma_with_failures_censored_or_dropped():
    distance = np.array([0.2, 0.4, 1.0, INF, 0.6])
    correct = np.ones(5, bool)
    group = np.array([True, True, False, False, False])
    # τ_max 0.5: the rest's distances all clip to 0.5.
    assert metrics.sigma(distance, correct, group, 0.5) == pytest.approx((0.3 - 0.5) / 0.5)
    # drop: the rest is {1.0, 0.6}; with τ_max = 1 its area is 0.8.
    assert metrics.sigma(distance, correct, group, 1.0, failures="drop") == pytest.approx((0.3 - 0.8) / 0.8)
    # pooled τ_max ignores the failure's infinity.
    assert metrics.pooled_tau_max(distance, correct) == 1.0


def test_sigma_is_nan_for_empty_group_or_empty_rest():
    distance, correct = np.array([0.2, 0.4]), np.ones(2, bool)
    assert np.isnan(metrics.sigma(distance, correct, np.zeros(2, bool), 1.0))
    assert np.isnan(metrics.sigma(distance, correct, np.ones(2, bool), 1.0))
    # A group whose members are all misclassified has no conditional curve.
    assert np.isnan(metrics.sigma(np.array([NAN, 0.4, 0.3]), np.array([False, True, True]), np.array([True, False, False]), 1.0))


def test_sigma_unconditional_penalises_misclassification():
    distance = np.array([NAN, 0.4, 0.4, 0.4])
    correct = np.array([False, True, True, True])
    group = np.array([True, True, False, False])
    assert metrics.sigma(distance, correct, group, 1.0) == pytest.approx(0.0)
    assert metrics.sigma(distance, correct, group, 1.0, conditional=False) == pytest.approx((0.2 - 0.4) / 0.4)


def test_robustness_bias_by_hand():
    distance = np.array([0.2, 0.4, 1.0, 1.0, 0.6])
    correct = np.ones(5, bool)
    group = np.array([True, True, False, False, False])
    np.testing.assert_allclose(metrics.robustness_bias(distance, correct, group, [0.1, 0.3, 0.5, 0.8, 1.0]),
                               [0.0, 0.5, 1.0, 2 / 3, 0.0])
    assert np.isnan(metrics.robustness_bias(distance, correct, np.zeros(5, bool), [0.5])).all()


def test_tau_max_setting():
    distance, correct = np.array([0.2, INF]), np.ones(2, bool)
    assert metrics.resolve_tau_max("pooled_max", distance, correct) == 0.2
    assert metrics.resolve_tau_max(1.5, distance, correct) == 1.5
    assert np.isnan(metrics.resolve_tau_max("pooled_max", np.array([INF]), np.ones(1, bool)))
    for bad in (0, -1, "largest"):
        with pytest.raises(ValueError, match="tau_max"):
            metrics.resolve_tau_max(bad, distance, correct)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="failure policy"):
        metrics.effective_distances([0.1], [True], failures="ignore")
    with pytest.raises(ValueError, match="no distance"):
        metrics.effective_distances([NAN], [True])
    with pytest.raises(ValueError, match="non-negative"):
        metrics.effective_distances([-0.1], [True])
    with pytest.raises(ValueError, match="shape"):
        metrics.effective_distances([0.1, 0.2], [True])
