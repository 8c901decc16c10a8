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


def _unknowns():
    """Group a: 4 measured points; group b: 2 measured, one failure and one at a cap of 0.5."""
    return pd.DataFrame({
        "estimator": ["rs"] * 8,
        "distance": [0.1, 0.2, 0.3, 0.4, 0.2, 0.4, 0.0, 0.5],
        "success": [True, True, True, True, True, True, False, True],
        "correct": [True] * 8,
        "cap": [0.5] * 8,
        "site": ["a", "a", "a", "a", "b", "b", "b", "b"],
    })


def test_band_puts_failed_and_capped_points_at_their_least_and_most():
    records = _unknowns()
    table = group_summary(records, ["site"], tau_max=1.0).set_index("group")
    a, b, whole = table.loc["a"], table.loc["b"], table.loc[OVERALL]
    assert (b["failures"], b["capped"], whole["failures"], whole["capped"]) == (1, 1, 1, 1)
    assert b["failure_share"] == pytest.approx(0.25) and b["cap_share"] == pytest.approx(0.25)
    assert a["flag"] == "failures, cap" and b["flag"] == "failures, cap"   # the rest of a holds b's unknowns
    # b's failure anywhere in [0, 1], its capped point in [0.5, 1]; a is all measured (area 0.25).
    least_b, most_b = (0.2 + 0.4 + 0 + 0.5) / 4, (0.2 + 0.4 + 1 + 1) / 4
    assert b["sigma_least"] == pytest.approx((least_b - 0.25) / 0.25)
    assert b["sigma_most"] == pytest.approx((most_b - 0.25) / 0.25)
    assert a["sigma_least"] == pytest.approx((0.25 - most_b) / most_b)
    assert a["sigma_most"] == pytest.approx((0.25 - least_b) / least_b)
    assert b["sigma_least"] <= b["sigma"] <= b["sigma_most"]


def test_no_flag_and_no_band_where_everything_was_measured():
    records = _unknowns().assign(success=True, distance=[0.1, 0.2, 0.3, 0.4, 0.2, 0.4, 0.3, 0.45])
    table = group_summary(records, ["site"]).set_index("group")
    assert (table.loc[["a", "b"], "flag"] == "").all()
    assert table.loc["b", "sigma_least"] == pytest.approx(table.loc["b", "sigma"])
    assert table.loc["b", "sigma_most"] == pytest.approx(table.loc["b", "sigma"])


def test_console_shows_failures_caps_and_how_sigma_treats_them():
    from robustness_bias.report.answer import group_table

    text = group_table(group_summary(_unknowns(), ["site"], tau_max=1.0))
    header, *_ = [line for line in text.splitlines() if "group" in line]
    assert "fail" in header and "cap" in header
    assert "⚑ band [" in text
    assert "rs failed on 1 of 8 attacked points (12%)" in text
    assert "1 of 8 rs distances (12%) sit at the largest it can report, 0.500" in text


def test_console_and_figure_show_the_adjusted_sigma_beside_sigma():
    """With adjust_for, each adjusted partition's block gets σ adjusted, its interval and p, a line saying what was
    held fixed and one per group whose strata were left out; the σ figure draws it beside each bar."""
    rng = np.random.default_rng(0)
    n = 400
    age = rng.choice(["young", "old"], n)
    group = np.where(rng.random(n) < np.where(age == "old", 0.7, 0.2), "b", "a")
    group[:3], age[:3] = "b", "child"        # only b has children: they cannot be compared
    records = pd.DataFrame({"estimator": pd.Categorical(["exact"] * n), "distance": rng.exponential(size=n),
                            "correct": True, "success": True, "cap": np.inf, "group": pd.Categorical(group),
                            "age": pd.Categorical(age)})
    summary = group_summary(records, ["group", "age"], adjust_for=["age"], min_group_size=5,
                            significance={"resamples": 50, "permutations": 50})
    from robustness_bias.report.answer import group_table
    from matplotlib.collections import PathCollection
    from robustness_bias.report.figures import sigma_figure
    text = group_table(summary)
    group_block, age_block = text.split("\n\n")
    assert "adj. σ" in group_block.splitlines()[1] and "adj. σ" not in age_block
    assert "the rest reweighted to each group's own mix of age" in group_block
    assert "b: left out, the rest has fewer than 2 there: age=child (3)" in group_block
    b = summary[(summary["partition"] == "group") & (summary["group"] == "b")].iloc[0]
    assert f"{b.adjusted_sigma:+.3f}" in next(line for line in group_block.splitlines() if line.startswith("  b "))
    figure = sigma_figure(summary, None)
    diamonds = [c.get_offsets()[:, 1] for c in figure.axes[0].collections if isinstance(c, PathCollection)]
    groups = summary[(summary["partition"] == "group") & (summary["group"] != OVERALL)]
    np.testing.assert_allclose(sorted(np.concatenate(diamonds)), sorted(groups["adjusted_sigma"]))
    assert "σ adjusted for age" in figure.texts[-1].get_text()
