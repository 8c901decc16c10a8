"""The per-group table agrees with the metric functions and reports empty groups as such."""

import numpy as np
import pandas as pd
import pytest

from robustness_bias.analysis.summary import OVERALL, audited_accuracy, group_summary


def _records():
    return pd.DataFrame({
        "estimator": ["exact"] * 6,
        "distance": [0.2, 0.4, np.inf, 1.0, 0.6, np.nan],
        "success": [True, True, False, True, True, False],
        "correct": [True, True, True, True, True, False],
        "site": pd.Categorical(["a", "a", "b", "b", "b", "b"], categories=["a", "b", "empty"]),
    })


def test_group_rows_match_the_metrics_by_hand():
    records = _records()
    table = group_summary(records, ["site"], rb_quantiles=(0.5,)).set_index("group")
    assert list(table.index) == [OVERALL, "a", "b", "empty"]
    a, b = table.loc["a"], table.loc["b"]
    assert a["size"] == 2 and b["size"] == 4 and b["accuracy"] == 0.75
    assert b["attacked"] == 3 and b["failures"] == 1 and b["success_share"] == pytest.approx(2 / 3)
    assert b["mean_distance"] == pytest.approx(0.8) and b["median_distance"] == pytest.approx(0.8)
    # τ_max = largest finite distance = 1.0; AUC_a = 0.3, AUC_b = (1 + 1 + 0.6) / 3 (the failure censored).
    assert a["tau_max"] == 1.0 and a["auc"] == pytest.approx(0.3)
    assert a["sigma"] == pytest.approx((0.3 - 2.6 / 3) / (2.6 / 3))
    # RB at the median of the pooled finite distances {0.2, 0.4, 0.6, 1.0} = 0.5.
    assert a["tau_q50"] == pytest.approx(0.5)
    assert a["rb_q50"] == pytest.approx(1.0)


def test_empty_group_is_reported_with_no_sigma():
    row = group_summary(_records(), ["site"]).set_index("group").loc["empty"]
    assert row["size"] == 0 and np.isnan(row["sigma"]) and np.isnan(row["accuracy"])


def test_overall_row_per_partition():
    table = group_summary(_records(), ["site"])
    overall = table[table["group"] == OVERALL].iloc[0]
    assert overall["size"] == 6 and overall["accuracy"] == pytest.approx(5 / 6) and np.isnan(overall["sigma"])


def test_audited_accuracy_counts_every_sample_once_whichever_estimators_saw_it():
    whole = _records().assign(sample_index=range(6))
    every_other = whole.iloc[::2].assign(estimator="deepfool")   # all correct: accuracy 1 on its subsample
    assert audited_accuracy(pd.concat([every_other, whole])) == pytest.approx(5 / 6)
    assert audited_accuracy(every_other) == 1.0
