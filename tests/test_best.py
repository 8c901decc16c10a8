"""The per-sample best bound (auditing/best.py): built from hand-made records, and through an audit."""

import numpy as np
import pandas as pd
import pytest
import torch

from robustness_bias import api
from robustness_bias.auditing.best import best_bound
from robustness_bias.models import logreg

INF = np.inf


def frame(name, bound, samples, distance, success, failure, queries, correct=None, precision="fp32"):
    """One estimator's records as the engine builds them (meta columns, then the estimator's)."""
    n = len(samples)
    return pd.DataFrame({"sample_index": samples, "label": [0] * n, "race": ["a", "b"] * (n // 2) + ["a"] * (n % 2),
                         "prediction": [0] * n, "correct": correct if correct is not None else [True] * n,
                         "estimator": name, "precision": precision, "distance": distance, "bound": bound,
                         "success": success, "queries": queries, "failure": failure})


def test_the_best_bound_is_the_smallest_successful_distance_per_sample():
    deepfool = frame("deepfool", "upper", [0, 1, 2, 3], [1.0, 2.0, INF, INF], [True, True, False, False],
                     ["none", "none", "budget_exhausted", "nonfinite_logits"], [11, 21, 31, 41])
    cw = frame("cw", "upper", [0, 1, 2, 3], [1.5, 1.2, 0.7, INF], [True, True, True, False],
               ["none", "none", "none", "nonfinite_logits"], [100, 200, 300, 400])
    fmn = frame("fmn", "upper", [0, 1, 2, 3], [0.9, INF, 0.8, INF], [True, False, True, False],
                ["none", "budget_exhausted", "none", "budget_exhausted"], [210, 210, 210, 210])
    best = best_bound([deepfool, cw, fmn]).set_index("sample_index")
    assert best["estimator"].eq("best").all() and best["bound"].eq("upper").all()
    np.testing.assert_array_equal(best["distance"], [0.9, 1.2, 0.7, INF])
    np.testing.assert_array_equal(best["success"], [True, True, True, False])
    np.testing.assert_array_equal(best["queries"], [321, 431, 541, 651])
    # all three failed sample 3, for different reasons: the budget, not one attack's reason
    assert list(best["failure"]) == ["none", "none", "none", "budget_exhausted"]
    assert list(best["race"]) == list(deepfool["race"])   # the samples' metadata comes along


def test_a_failure_all_attacks_share_is_kept_and_misclassified_samples_stay_so():
    deepfool = frame("deepfool", "upper", [0, 1], [INF, np.nan], [False, False], ["nonfinite_logits", "misclassified"],
                     [5, 0], correct=[True, False])
    cw = frame("cw", "upper", [0, 1], [INF, np.nan], [False, False], ["nonfinite_logits", "misclassified"], [7, 0],
               correct=[True, False])
    best = best_bound([deepfool, cw]).set_index("sample_index")
    assert list(best["failure"]) == ["nonfinite_logits", "misclassified"]
    assert np.isinf(best.loc[0, "distance"]) and np.isnan(best.loc[1, "distance"])
    assert not best["success"].any() and list(best["queries"]) == [12, 0]


def test_only_samples_every_attack_measured_and_only_upper_bounds_count():
    deepfool = frame("deepfool", "upper", [0, 8, 16, 24], [1.0, 2.0, 3.0, 4.0], [True] * 4, ["none"] * 4, [1] * 4)
    cw = frame("cw", "upper", [0, 16], [0.5, 3.5], [True] * 2, ["none"] * 2, [2] * 2, precision="bf16")
    exact = frame("exact", "exact", [0, 8, 16, 24], [0.1] * 4, [True] * 4, ["none"] * 4, [1] * 4)
    rs = frame("rs", "lower", [0, 16], [0.05] * 2, [True] * 2, ["none"] * 2, [1000] * 2)
    best = best_bound([exact, deepfool, cw, rs])
    assert list(best["sample_index"]) == [0, 16]
    np.testing.assert_array_equal(best["distance"], [0.5, 3.0])
    assert best["precision"].eq("fp32+bf16").all()
    assert best_bound([exact, rs]) is None


def test_an_audit_records_the_best_bound_beside_the_attacks():
    torch.manual_seed(0)
    model = logreg((1, 6, 6), 3, {"mean": [0.5], "std": [0.25]})
    with torch.no_grad():
        model[2].weight.mul_(0.1)
    model.eval()
    x = 0.3 + 0.4 * torch.rand(40, 1, 6, 6)
    y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 3   # four misclassified
    groups = np.array(["a", "b"] * 20)
    result = api.audit(model, x, y, sensitive_features={"group": groups}, estimators=["exact", "deepfool", "fmn"],
                       best=True, progress=False, significance={"resamples": 0, "permutations": 0})
    records = result.records
    distances = records.pivot(index="sample_index", columns="estimator", values="distance")
    attacked = records[records["estimator"] == "best"].set_index("sample_index")["correct"]
    np.testing.assert_array_equal(distances.loc[attacked, "best"],
                                  np.minimum(distances.loc[attacked, "deepfool"], distances.loc[attacked, "fmn"]))
    assert (distances.loc[attacked, "best"] >= distances.loc[attacked, "exact"] * (1 - 1e-5)).all()
    assert records.loc[records["estimator"] == "best", "failure"].eq("misclassified").sum() == 4
    assert "best" in set(result.summary["estimator"])


def sigma_rows(estimator, sigmas, p=0.01):
    """The report's σ table (report.jobs.collect) for one model's final audit: race groups a, b, c."""
    return pd.DataFrame({"estimator": estimator, "epoch_tag": "final", "partition": "race", "group": ["a", "b", "c"],
                         "attacked": [30, 40, 50], "sigma": sigmas, "sigma_low": np.nan, "sigma_high": np.nan,
                         "p_adjusted": p, "dataset": "utkface", "model": "cnn", "job": "j", "target": "", "alpha": np.nan,
                         "tau": np.nan})


def test_the_tightness_tables_set_sigma_side_by_side_with_agreement_and_the_largest_shift():
    from robustness_bias.report.tightness import tightness_tables

    sigma = pd.concat([sigma_rows("deepfool", [0.3, -0.2, -0.1]), sigma_rows("cw", [0.5, -0.2, 0.1], p=[0.01, 0.01, 0.2]),
                       sigma_rows("fmn", [0.3, -0.3, -0.05]), sigma_rows("best", [0.25, -0.25, -0.05], p=[0.01, 0.01, 0.3]),
                       sigma_rows("rs", [0.1, 0.1, 0.1])], ignore_index=True)
    tables = tightness_tables(sigma, pd.DataFrame(columns=["job", "dataset", "model"]))
    side = tables["tightness_sigma"].set_index("group")
    np.testing.assert_allclose(side["best − deepfool"], [-0.05, -0.05, 0.05])
    np.testing.assert_allclose(side["best − cw"], [-0.25, -0.05, -0.15])
    assert list(side["sign cw = best"]) == ["yes", "yes", "no"]
    agreement = tables["tightness_agreement"].set_index("comparison")
    assert agreement.loc["deepfool vs best", "agree"] == 3 and agreement.loc["cw vs best", "agree"] == 2
    assert agreement.loc["cw vs best", "largest shift"] == pytest.approx(-0.25)
    assert agreement.loc["cw vs best", "where"].startswith("cnn race=a")
    # significant under deepfool: all three; under best, c is not (p 0.3)
    assert agreement.loc["deepfool vs best", "significant (first)"] == 3
    assert agreement.loc["deepfool vs best", "kept"] == 2
    assert tightness_tables(sigma[sigma["estimator"] != "best"], pd.DataFrame()) == {}
