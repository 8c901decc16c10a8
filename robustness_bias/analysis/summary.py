"""Per-group tables from audit records, in the spirit of fairlearn's MetricFrame.

One tidy row per (estimator, partition, group), plus a row ``(all)`` per (estimator, partition)
with the overall values, so every group can be read against the whole test set.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from ..config.job import AuditConfig, Significance
from ..records import INTERSECTION, intersection_name, intersection_parts
from . import metrics
from .significance import benjamini_hochberg, bootstrap_sigma, permutation_p_values, standardized_sigma

OVERALL = "(all)"


def group_values(column: pd.Series) -> list:
    """The groups of a partition column: every category (empty ones too) or the sorted values."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    return sorted(column.unique())


# A σ is flagged when more than this share of a group's or its complement's attacked points failed, or sat at
# the estimator's cap: then it rests on where those points were put (docs/design.md, "When σ cannot be trusted").
FLAG_SHARE = 0.05


def _distance_stats(distance: np.ndarray, correct: np.ndarray, success: np.ndarray, cap: np.ndarray) -> dict:
    attacked = correct
    solved = distance[attacked & success]
    failures, capped = int((attacked & ~success).sum()), int((attacked & success & metrics.at_cap(distance, cap)).sum())
    return {
        "attacked": int(attacked.sum()),
        "failures": failures,
        "success_share": float(success[attacked].mean()) if attacked.any() else np.nan,
        "failure_share": failures / attacked.sum() if attacked.any() else np.nan,
        "capped": capped,
        "cap_share": capped / attacked.sum() if attacked.any() else np.nan,
        "mean_distance": float(solved.mean()) if solved.size else np.nan,
        "median_distance": float(np.median(solved)) if solved.size else np.nan,
    }


def _flag(distance, correct, success, cap, member) -> str:
    """Why σ of the group ``member`` rests on its unknown points: ``failures``, ``cap``, both, or ''."""
    reasons = []
    for name, unknown in (("failures", ~success), ("cap", success & metrics.at_cap(distance, cap))):
        shares = [unknown[correct & side].mean() for side in (member, ~member) if (correct & side).any()]
        if any(share > FLAG_SHARE for share in shares):
            reasons.append(name)
    return ", ".join(reasons)


def audited_accuracy(records: pd.DataFrame) -> float:
    """The share of correctly classified samples among those an audit saw, each sample counted once
    whichever estimators measured it."""
    return float(records.drop_duplicates("sample_index")["correct"].mean())


def sigmas_of(summary: pd.DataFrame, partition: str) -> dict[str, float]:
    """σ of every group of ``partition`` that has one, keyed ``<estimator>/<partition>=<group>``."""
    rows = summary[(summary["partition"] == partition) & (summary["group"] != OVERALL) & summary["sigma"].notna()]
    return {f"{r.estimator}/{r.partition}={r.group}": r.sigma for r in rows.itertuples()}


def least_robust(rows: pd.DataFrame) -> str | None:
    """The least robust group of ``rows`` (σ rows of one partition under one estimator, from one audit): the group
    with the lowest σ among those that have one, the first of them in the rows' order where σ ties; None when no
    group has a σ. The console's mark, a run's headline and the report's findings all pick it here."""
    sized = rows[rows["sigma"].notna()]
    return None if sized.empty else str(sized.loc[sized["sigma"].idxmin(), "group"])


def groups_without_sigma(summary: pd.DataFrame) -> list[str]:
    """``"<partition>=<group> by <estimators>"`` for every group too small for σ: on real data, e.g. an
    age bin a briefly trained model never classifies correctly."""
    small = summary[(summary["group"] != OVERALL) & summary["too_small"]]
    by_group = small.groupby(["partition", "group"], sort=False, observed=True)["estimator"]
    return [f"{partition}={group} by {', '.join(map(str, estimators))}"
            for (partition, group), estimators in by_group]


DEFAULT = AuditConfig()   # the command line's audit.* defaults
# A stratum of the adjusting attributes is compared only where the rest has this many counting points in it: one
# more than a mean needs, so that its spread, and the interval, can be estimated.
MIN_STRATUM = 2
ADJUSTED = ("adjusted_sigma", "adjusted_sigma_low", "adjusted_sigma_high", "adjusted_p_value")


def group_summary(records: pd.DataFrame, partitions: list[str], *, conditional: bool = DEFAULT.conditional,
                  failures: str = DEFAULT.failures, tau_max=DEFAULT.tau_max, rb_quantiles=tuple(DEFAULT.rb_quantiles),
                  min_group_size: int = 1, significance: dict | None = None, adjust_for=()) -> pd.DataFrame:
    """σ(P), RB(P, τ) and plain statistics for every group of every partition, per estimator.

    ``records`` holds one row per (sample, estimator) with ``distance``, ``success`` and
    ``correct`` and one column per partition. RB is evaluated at quantiles of the audit's
    pooled distances, so the τ's mean the same thing on every dataset; their values are in
    the ``tau_q*`` columns.

    Each σ comes with a bootstrap interval (``sigma_low``, ``sigma_high``), a permutation-test
    p-value for σ ≠ 0 and its Benjamini–Hochberg adjustment across all groups of the estimator's
    audit. Groups with fewer than ``min_group_size`` attacked points get no σ (``too_small``; by default every
    group gets one, where the command line's ``audit.min_group_size`` asks for 5). The other options default to
    the command line's ``audit.*`` (robustness_bias/config/job.py).
    What σ rests on: each group's failures and distances at the estimator's cap (records' ``cap``),
    counted and as shares of its attacked points; ``sigma_least``/``sigma_most``, the range σ spans
    wherever those points' true distances lie; and ``flag`` (``failures``, ``cap``) where they pass
    :data:`FLAG_SHARE` in the group or in the rest.

    With ``adjust_for`` (attributes, columns of ``records``), σ adjusted for them as well, with its own interval
    and p-values (:func:`_adjusted`): ``adjusted_sigma``, ``adjusted_sigma_low``/``_high``, ``adjusted_p_value``,
    ``adjusted_p_adjusted``, ``adjusted_for`` and ``incomparable`` (the strata left out).
    """
    significance = {**asdict(Significance()), **(significance or {})}
    check_adjusting(records, adjust_for)
    rows = []
    for estimator, frame in records.groupby("estimator", sort=False, observed=True):
        distance = frame["distance"].to_numpy(float)
        correct = frame["correct"].to_numpy(bool)
        success = frame["success"].to_numpy(bool)
        cap = frame["cap"].to_numpy(float) if "cap" in frame else np.full(len(frame), np.inf)   # records before caps
        kw = dict(conditional=conditional, failures=failures)
        t_max = metrics.resolve_tau_max(tau_max, distance, correct, **kw)
        pooled = metrics.effective_distances(distance, correct, **kw)
        finite = pooled[np.isfinite(pooled)]
        taus = np.quantile(finite, rb_quantiles) if finite.size else np.full(len(rb_quantiles), np.nan)
        tau_columns = {f"tau_q{round(q * 100)}": t for q, t in zip(rb_quantiles, taus)}
        overall = {"group": OVERALL, "size": len(frame), "accuracy": float(correct.mean()) if len(frame) else np.nan,
                   **_distance_stats(distance, correct, success, cap), "auc": metrics.area_under_survival(pooled, t_max),
                   "sigma": np.nan, "tau_max": t_max, **tau_columns,
                   **{f"rb_q{round(q * 100)}": np.nan for q in rb_quantiles},
                   "sigma_low": np.nan, "sigma_high": np.nan, "p_value": np.nan, "sigma_least": np.nan,
                   "sigma_most": np.nan, "flag": "", "cap": float(np.min(cap)) if len(cap) else np.inf,
                   "too_small": False}
        first_row = len(rows)
        for partition in partitions:   # the "(all)" row, the same in every partition, then its groups
            column = frame[partition]
            groups = group_values(column)
            codes = pd.Categorical(column.astype(str), categories=[str(g) for g in groups]).codes
            tests = _significance(distance, correct, codes, len(groups), t_max, kw, significance)
            adjusting = [a for a in adjust_for if a not in intersection_parts(partition)]   # never a partition for itself
            if adjusting:
                tests.update(_adjusted(frame, adjusting, correct, distance, codes, len(groups), t_max, kw,
                                       significance, min_group_size))
            rows.append({"estimator": estimator, "partition": partition, **overall,
                         **({"adjusted_for": ""} if adjust_for else {})})
            for code, group in enumerate(groups):
                member = codes == code
                row = {"estimator": estimator, "partition": partition, "group": str(group), "size": int(member.sum()),
                       "accuracy": float(correct[member].mean()) if member.any() else np.nan,
                       **_distance_stats(distance[member], correct[member], success[member], cap[member]),
                       "auc": metrics.area_under_survival(
                           metrics.effective_distances(distance[member], correct[member], **kw), t_max),
                       "sigma": metrics.sigma(distance, correct, member, t_max, **kw),
                       "tau_max": t_max, **tau_columns}
                rb = metrics.robustness_bias(distance, correct, member, taus, **kw)
                row.update({f"rb_q{round(q * 100)}": v for q, v in zip(rb_quantiles, rb)})
                row.update({name: values[code] for name, values in tests.items()})
                row["sigma_least"], row["sigma_most"] = metrics.sigma_band(distance, correct, success, cap, member,
                                                                           t_max, conditional=conditional)
                row["flag"] = _flag(distance, correct, success, cap, member)
                row["too_small"] = row["attacked"] < min_group_size
                if adjust_for:
                    row["adjusted_for"] = ", ".join(adjusting)
                if row["too_small"]:
                    row.update(sigma=np.nan, sigma_low=np.nan, sigma_high=np.nan, p_value=np.nan, sigma_least=np.nan,
                               sigma_most=np.nan, flag="", **dict.fromkeys(ADJUSTED, np.nan))
                rows.append(row)
        for p_value, adjusted in (("p_value", "p_adjusted"), ("adjusted_p_value", "adjusted_p_adjusted")):
            if p_value == "p_value" or adjust_for:
                values = benjamini_hochberg(np.array([row.get(p_value, np.nan) for row in rows[first_row:]], float))
                for row, value in zip(rows[first_row:], values):
                    row[adjusted] = value
    return pd.DataFrame(rows)


def check_adjusting(records: pd.DataFrame, adjust_for) -> None:
    """One line naming an adjusting attribute the records do not have, and what they have."""
    missing = [a for a in adjust_for if a not in records.columns]
    if missing:
        known = [c for c in records.columns if isinstance(records[c].dtype, pd.CategoricalDtype)
                 and c not in ("estimator", "failure") and INTERSECTION not in c]
        raise ValueError(f"adjust_for={list(adjust_for)}: the audit has no attribute {missing}. "
                         f"Fix: adjust for some of {known}")


def _adjusted(frame, adjusting, correct, distance, codes, n_groups, tau_max, kw, options,
              min_group_size) -> dict[str, np.ndarray]:
    """σ of every group of one partition adjusted for the attributes ``adjusting``: the rest standardized to the
    group's own distribution over their strata (docs/design.md, "σ adjusted for other attributes"), with a
    bootstrap interval resampling within strata and a permutation p-value shuffling within strata. The strata
    where the rest has fewer than :data:`MIN_STRATUM` counting points are left out for that group and named
    in ``incomparable``; a group with fewer than ``min_group_size`` comparable points gets no adjusted σ."""
    stratum, keys = pd.MultiIndex.from_frame(frame[adjusting].astype(str)).factorize(sort=True)
    names = [", ".join(f"{a}={v}" for a, v in zip(adjusting, key)) for key in keys]
    shape = dict(strata=stratum, n_groups=n_groups, n_strata=len(names), min_stratum=MIN_STRATUM, **kw)
    sigma, counts, left_out = standardized_sigma(distance, correct, codes, tau_max, **shape)
    low, high = bootstrap_sigma(distance, correct, codes, tau_max, resamples=options["resamples"],
                                level=options["level"], seed=options["seed"], **shape)
    p_value = permutation_p_values(distance, correct, codes, tau_max, permutations=options["permutations"],
                                   seed=options["seed"], **shape)
    enough = (counts - left_out).sum(1) >= min_group_size
    incomparable = ["; ".join(f"{names[s]} ({int(left_out[g, s])})" for s in np.flatnonzero(left_out[g]))
                    for g in range(n_groups)]
    return {"adjusted_sigma": np.where(enough, sigma, np.nan), "adjusted_sigma_low": np.where(enough, low, np.nan),
            "adjusted_sigma_high": np.where(enough, high, np.nan), "adjusted_p_value": np.where(enough, p_value, np.nan),
            "incomparable": np.array(incomparable, dtype=object)}


def _significance(distance, correct, codes, n_groups, tau_max, kw, options) -> dict[str, np.ndarray]:
    """Bootstrap interval and permutation p-value of σ for every group of one partition."""
    if not np.isfinite(tau_max) or n_groups == 0:
        empty = np.full(n_groups, np.nan)
        return {"sigma_low": empty, "sigma_high": empty, "p_value": empty}
    low, high = bootstrap_sigma(distance, correct, codes, tau_max, n_groups=n_groups,
                                resamples=options["resamples"], level=options["level"], seed=options["seed"], **kw)
    p_value = permutation_p_values(distance, correct, codes, tau_max, n_groups=n_groups,
                                   permutations=options["permutations"], seed=options["seed"], **kw)
    return {"sigma_low": low, "sigma_high": high, "p_value": p_value}


# The options of group_summary an audit is summarized with (the command line's audit.<key>).
SUMMARY_OPTIONS = ("conditional", "failures", "tau_max", "rb_quantiles", "min_group_size", "significance", "adjust_for")


def summary_settings(options: dict, partitions: list[str], chosen: list[str]) -> dict:
    """What :func:`summarize` takes for one audit: ``options`` (every key of :data:`SUMMARY_OPTIONS`)
    and the partitions, each single one plus the intersection of ``chosen`` when it names several
    attributes (``race×gender``), as the auditor names its column. The command line and the Python
    API both build their settings here, so they summarize alike."""
    return {**{key: options[key] for key in SUMMARY_OPTIONS},
            "partitions": [*partitions, *([intersection_name(chosen)] if len(chosen) > 1 else [])]}


def summarize(records: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """The per-group table of one audit's records, with its epoch: ``settings`` holds ``partitions`` and
    the keyword options of :func:`group_summary`, as a job's ``result.json`` stores them."""
    options = dict(settings)
    summary = group_summary(records, options.pop("partitions"), **options)
    summary.insert(1, "epoch", records["epoch"].iloc[0])
    return summary
