"""A model view of robustness bias: each group's distance ratio from an accelerated failure time (AFT)
regression, adjusted for other attributes (issue 34).

σ(P) compares the area under a group's survival curve with the rest's (Nanda et al., FAccT 2021,
"Fairness Through Robustness", §3, Eq. 3); 1 + σ is a ratio of restricted mean distances (docs/design.md,
"Intervals of σ"). It cannot tell a group that sits closer to the boundary from one that merely holds more
of the points of another attribute that does (a race skewed towards one age bin). The AFT view regresses
log distance on "in P" plus the adjusting attributes: exp(β) of the indicator is P's distance ratio to the
rest *within* the strata of those attributes (docs/design.md, "A model view: AFT ratios").

Like σ's conditional form (the paper's Eq. 1–3) it counts correctly classified points only, and like σ's
censor policy it reads a failure as a distance beyond τ_max: an AFT takes both as right-censored
observations instead of values. The fits are lifelines'; nothing here computes a likelihood.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..records import intersection_parts
from . import metrics
from .summary import group_values

COLUMNS = ["estimator", "partition", "group", "adjusted_for", "n", "events", "censored", "ratio", "ratio_low",
           "ratio_high", "p_value", "reason"]
MODELS = ("weibull", "lognormal")
# Rows of this covariate and these data columns are ours; the adjusting dummies are named "<attribute>=<group>".
IN_GROUP, DURATION, EVENT = "in group", "_distance", "_measured"


def aft_ratios(records: pd.DataFrame, partitions, adjust_for=(), *, level: float = 0.95, min_group_size: int = 5,
               model: str = "weibull") -> pd.DataFrame:
    """Per estimator × partition × group: the distance ratio exp(β) of "in the group" against the rest (one
    vs rest, as σ(P)), adjusted for the categorical attributes ``adjust_for`` but the partition's own
    (:func:`own_strata`; dummy-coded, first level dropped; none: the unadjusted ratio), with its Wald interval at
    ``level`` and p-value for ratio = 1.

    ``model``: the AFT's error distribution, which sets what "the" ratio is where the group's distances are not
    the rest's scaled. ``"weibull"`` (default): it tracks the bulk of the distances, and unadjusted lies nearer
    1 + σ (the ratio of restricted means it is read beside; ``bench/aft.py --sigma``); it also fits audits'
    distances better (AIC). ``"lognormal"``: the ratio of geometric means, least squares on log distance where
    nothing is censored, so its interval holds for any shape of one spread everywhere; it weighs the points
    nearest the boundary most. The Weibull's interval under-covers on log-normal distances (docs/design.md,
    "A model view: AFT ratios", has the figures and where the two disagree).

    Columns :data:`COLUMNS`: ``n``, ``events``, ``censored`` count the group's correctly classified points,
    its measured distances and its censored ones (failures and capped). Where no fit can be made (too few
    points, no measured distance on one side, a group that the adjusting attributes determine, a fit that
    fails) the numbers are NaN and ``reason`` says why; it is empty otherwise. Never raises for a fit.
    """
    if model not in MODELS:
        raise ValueError(f"model={model!r}: use one of {MODELS}")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: the interval's coverage, between 0 and 1 (0.95)")
    adjust_for = list(dict.fromkeys([adjust_for] if isinstance(adjust_for, str) else adjust_for))
    partitions = [partitions] if isinstance(partitions, str) else list(partitions)
    missing = [name for name in dict.fromkeys([*partitions, *adjust_for]) if name not in records]
    if missing:
        raise ValueError(f"the records have no column {missing}: they have {list(records.columns)}")
    rows = []
    for estimator, frame in records.groupby("estimator", sort=False, observed=True):
        counting = frame[frame["correct"].to_numpy(bool)]
        duration, event = durations(frame)
        for partition in partitions:
            adjusting = own_strata(partition, adjust_for)
            design = independent(dummies(counting, adjusting))
            labels = counting[partition].astype(str).to_numpy()
            for group in group_values(frame[partition]):
                fitted = fit_ratio(duration, event, labels == str(group), design, level=level,
                                   min_group_size=min_group_size, model=model)
                rows.append({"estimator": str(estimator), "partition": partition, "group": str(group),
                             "adjusted_for": ", ".join(adjusting), **fitted})
    return pd.DataFrame(rows, columns=COLUMNS)


def own_strata(partition: str, adjust_for: list[str]) -> list[str]:
    """The attributes ``partition`` is adjusted for: ``adjust_for`` less the partition's own (race is not adjusted
    for race, nor race×gender for gender), as σ adjusted for them leaves them out (docs/design.md, "σ adjusted for
    other attributes"), so that one setting adjusts race for age and age for race."""
    return [name for name in adjust_for if name not in intersection_parts(partition)]


def durations(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per correctly classified point of one estimator's records: the distance the AFT sees, and whether it
    was measured (an event) or is only known to be at least that (right-censored).

    A failure is censored at τ_max, the audit's largest finite distance (:func:`metrics.pooled_tau_max`),
    where σ's censor policy puts it; a distance at the estimator's cap (smoothing's largest certifiable
    radius) is censored at the cap. A measured 0 (a point on the boundary) has log −∞, which no AFT
    likelihood takes: it is floored at half the smallest positive distance, below every measured one, so
    it keeps its rank without the outlier on the log scale that a tiny constant such as 1e-12 would make.
    """
    correct = frame["correct"].to_numpy(bool)
    distance = frame["distance"].to_numpy(float)
    tau_max = metrics.pooled_tau_max(distance, correct)
    success = frame["success"].to_numpy(bool)[correct]
    distance = distance[correct]
    cap = frame["cap"].to_numpy(float)[correct] if "cap" in frame else np.full(distance.shape, np.inf)
    capped = success & metrics.at_cap(distance, cap)
    duration = np.where(success, distance, tau_max)
    positive = duration[np.isfinite(duration) & (duration > 0)]
    floor = positive.min() / 2 if positive.size else np.nan
    return np.where(duration > 0, duration, floor), success & ~capped


def dummies(counting: pd.DataFrame, attributes: list[str]) -> pd.DataFrame:
    """The adjusting attributes as 0/1 columns ``<attribute>=<group>`` over the counting points, the first
    group present of each dropped (the baseline): categories with no counting point get no column."""
    if not attributes:
        return pd.DataFrame(index=counting.index)
    values = pd.DataFrame({name: counting[name].astype(str) for name in attributes})
    return pd.get_dummies(values, prefix_sep="=", drop_first=True, dtype=float)


def independent(columns: pd.DataFrame) -> pd.DataFrame:
    """The columns that add to the span of the intercept and the columns kept before them: adjusting for
    gender and race×gender repeats gender, whose columns would leave the fit without a unique optimum."""
    kept, basis = [], np.ones((len(columns), 1))
    for name in columns:
        trial = np.column_stack([basis, columns[name].to_numpy(float)])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            kept, basis = [*kept, name], trial
    return columns[kept]


def determined(member: np.ndarray, adjusting: pd.DataFrame) -> bool:
    """Whether the group indicator is a combination of the intercept and the adjusting columns, the group a union
    of strata: gender=female adjusted for race×gender. Then no data separate the group from its strata, and its
    ratio is not identified."""
    basis = np.column_stack([np.ones(len(member)), adjusting.to_numpy(float)])
    return np.linalg.matrix_rank(np.column_stack([basis, member.astype(float)])) == np.linalg.matrix_rank(basis)


def fit_ratio(duration: np.ndarray, event: np.ndarray, member: np.ndarray, adjusting: pd.DataFrame, *,
              level: float, min_group_size: int, model: str) -> dict:
    """One AFT fit: the group's counts, its ratio, interval and p-value, or NaN with the reason there is none."""
    counts = {"n": int(member.sum()), "events": int(event[member].sum()), "censored": int((~event[member]).sum())}
    reason = unfit_reason(event, member, adjusting, min_group_size)
    if not reason:
        try:
            return {**counts, **_fit(duration, event, member, adjusting, level, model), "reason": ""}
        except NoFit as doubt:
            reason = str(doubt)
        except Exception as error:   # lifelines' optimizer fails in many ways (ConvergenceError, LinAlgError, …)
            reason = f"the fit failed: {type(error).__name__}: {_first_line(error)}"
    return {**counts, "ratio": np.nan, "ratio_low": np.nan, "ratio_high": np.nan, "p_value": np.nan, "reason": reason}


def unfit_reason(event: np.ndarray, member: np.ndarray, adjusting: pd.DataFrame, min_group_size: int) -> str:
    """Why the group's ratio cannot be estimated before trying ('' where it can): the MLE of β is infinite
    where one side has no measured distance, and not unique where the adjusting attributes fix the group."""
    for side, name in ((member, "the group"), (~member, "the rest")):
        if side.sum() < min_group_size:
            return (f"{int(side.sum())} correctly classified points in {name}, "
                    f"fewer than min_group_size={min_group_size}")
        if not event[side].any():
            return f"no measured distance in {name} (all {int(side.sum())} censored)"
    if determined(member, adjusting):
        return "the adjusting attributes determine the group (collinear): no ratio within their strata"
    return ""


class NoFit(Exception):
    """A fit that lifelines finished but doubts (a convergence warning), or without a finite interval."""


def _first_line(error) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


def _fit(duration, event, member, adjusting: pd.DataFrame, level: float, model: str) -> dict:
    data = adjusting.assign(**{IN_GROUP: member.astype(float), DURATION: duration, EVENT: event})
    row = _fitted(data.reset_index(drop=True), model, level).summary.xs(IN_GROUP, level="covariate").iloc[0]
    low, high = (row[[c for c in row.index if c.startswith(f"exp(coef) {side} ")][0]] for side in ("lower", "upper"))
    if not (np.isfinite(row["se(coef)"]) and np.isfinite(low) and np.isfinite(high)):
        raise NoFit(f"no finite interval (standard error {row['se(coef)']})")
    return {"ratio": float(row["exp(coef)"]), "ratio_low": float(low), "ratio_high": float(high),
            "p_value": float(row["p"])}


# Where the fitter's own minimizer does not converge, the one lifelines' regression fitters use by default. The
# Weibull's own, SLSQP, runs off to an infinite likelihood on narrow, well separated distances such as the exact
# distances of experiment=synthetic_confounded by stratum (docs/design.md, "A model view: AFT ratios").
FALLBACK_MINIMIZER = "BFGS"


def _fitted(data: pd.DataFrame, model: str, level: float):
    """lifelines' AFT fitted to ``data``, with its own minimizer or else :data:`FALLBACK_MINIMIZER`; :class:`NoFit`
    where it converges with doubts (lifelines' ConvergenceWarning), its ConvergenceError where neither converges."""
    # imported here: lifelines takes over a second to import, which the report and API pay only when they fit
    from lifelines import LogNormalAFTFitter, WeibullAFTFitter
    from lifelines.exceptions import ConvergenceError, ConvergenceWarning

    for minimizer in (None, FALLBACK_MINIMIZER):
        fitter = {"weibull": WeibullAFTFitter, "lognormal": LogNormalAFTFitter}[model](alpha=1 - level)
        if minimizer:
            fitter._scipy_fit_method = minimizer   # lifelines' own advice on a ConvergenceError
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("ignore")                       # pandas' notices about lifelines' calls …
                warnings.simplefilter("always", ConvergenceWarning)   # … but not lifelines' doubts about the fit
                fitter.fit(data, DURATION, EVENT)
            break
        except ConvergenceError:
            if minimizer:
                raise
    doubts = [_first_line(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    if doubts:
        raise NoFit(f"lifelines doubts the fit: {doubts[0]}")
    return fitter
