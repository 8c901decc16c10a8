"""Per-group tables from audit records, in the spirit of fairlearn's MetricFrame.

One tidy row per (estimator, partition, group), plus a row ``(all)`` per (estimator, partition)
with the overall values, so every group can be read against the whole test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import bias

OVERALL = "(all)"


def group_values(column: pd.Series) -> list:
    """The groups of a partition column: every category (empty ones too) or the sorted values."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    return sorted(column.unique())


def _distance_stats(distance: np.ndarray, correct: np.ndarray, success: np.ndarray) -> dict:
    attacked = correct
    solved = distance[attacked & success]
    return {
        "attacked": int(attacked.sum()),
        "failures": int((attacked & ~success).sum()),
        "success_share": float(success[attacked].mean()) if attacked.any() else np.nan,
        "mean_distance": float(solved.mean()) if solved.size else np.nan,
        "median_distance": float(np.median(solved)) if solved.size else np.nan,
    }


def group_summary(records: pd.DataFrame, partitions: list[str], *, conditional: bool = True,
                  failures: str = "censor", tau_max="pooled_max", rb_quantiles=(0.25, 0.5, 0.75)) -> pd.DataFrame:
    """σ(P), RB(P, τ) and plain statistics for every group of every partition, per estimator.

    ``records`` holds one row per (sample, estimator) with ``distance``, ``success`` and
    ``correct`` and one column per partition. RB is evaluated at quantiles of the audit's
    pooled distances, so the τ's mean the same thing on every dataset; their values are in
    the ``tau_q*`` columns.
    """
    rows = []
    for estimator, frame in records.groupby("estimator", sort=False, observed=True):
        distance = frame["distance"].to_numpy(float)
        correct = frame["correct"].to_numpy(bool)
        success = frame["success"].to_numpy(bool)
        kw = dict(conditional=conditional, failures=failures)
        t_max = bias.resolve_tau_max(tau_max, distance, correct, **kw)
        pooled = bias.effective_distances(distance, correct, **kw)
        finite = pooled[np.isfinite(pooled)]
        taus = np.quantile(finite, rb_quantiles) if finite.size else np.full(len(rb_quantiles), np.nan)
        tau_columns = {f"tau_q{round(q * 100)}": t for q, t in zip(rb_quantiles, taus)}
        for partition in partitions:
            column = frame[partition]
            groups = group_values(column)
            overall = {"estimator": estimator, "partition": partition, "group": OVERALL, "size": len(frame),
                       "accuracy": float(correct.mean()) if len(frame) else np.nan,
                       **_distance_stats(distance, correct, success),
                       "auc": bias.area_under_survival(bias.effective_distances(distance, correct, **kw), t_max),
                       "sigma": np.nan, "tau_max": t_max, **tau_columns}
            overall.update({f"rb_q{round(q * 100)}": np.nan for q in rb_quantiles})
            rows.append(overall)
            for group in groups:
                member = (column == group).to_numpy()
                row = {"estimator": estimator, "partition": partition, "group": str(group), "size": int(member.sum()),
                       "accuracy": float(correct[member].mean()) if member.any() else np.nan,
                       **_distance_stats(distance[member], correct[member], success[member]),
                       "auc": bias.area_under_survival(
                           bias.effective_distances(distance[member], correct[member], **kw), t_max),
                       "sigma": bias.sigma(distance, correct, member, t_max, **kw),
                       "tau_max": t_max, **tau_columns}
                rb = bias.robustness_bias(distance, correct, member, taus, **kw)
                row.update({f"rb_q{round(q * 100)}": v for q, v in zip(rb_quantiles, rb)})
                rows.append(row)
    return pd.DataFrame(rows)
