"""The paper's robustness-bias metrics: survival curves, RB(P, τ) and σ(P).

Plain numpy, so that reports can be rebuilt from saved records without torch.

Every function takes per-point arrays from one audit:

- ``distance``: pixel-space L2 distance to the decision boundary; ``+inf`` where the
  estimator failed; ignored (may be NaN) where the point is misclassified.
- ``correct``: whether the model classified the point correctly.

Two forms of the survival curve Î_P(τ) (the share of P farther than τ from the boundary):
*conditional* (default, the paper's Eq. 1–3) counts only correctly classified points;
*unconditional* (Eq. 4–6) divides by |P| and counts misclassified points as distance 0.
Failures (``+inf``) are either *censored* (default: beyond every τ) or *dropped*.

Where an estimator failed on a point, or reported the largest distance it can (smoothing's cap), the
point's distance is known only to lie in an interval; :func:`sigma_band` gives the range σ spans over
every placement of those points (docs/design.md, "When σ cannot be trusted").
"""

from __future__ import annotations

import numpy as np

FAILURE_POLICIES = ("censor", "drop")


def effective_distances(distance, correct, *, conditional: bool = True, failures: str = "censor") -> np.ndarray:
    """The distances that make up a group's survival curve under the chosen form and failure policy."""
    if failures not in FAILURE_POLICIES:
        raise ValueError(f"failures={failures!r} is not a failure policy; use one of {FAILURE_POLICIES}")
    distance = np.asarray(distance, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    if distance.shape != correct.shape:
        raise ValueError(f"distance has shape {distance.shape} but correct has {correct.shape}")
    d = distance[correct] if conditional else np.where(correct, distance, 0.0)
    if np.isnan(d).any():
        raise ValueError("a correctly classified point has no distance (NaN); every attacked point needs one")
    if (d < 0).any():
        raise ValueError("distances must be non-negative")
    if failures == "drop":
        d = d[np.isfinite(d)]
    return d


def survival(d: np.ndarray, taus) -> np.ndarray:
    """Î(τ): share of the effective distances ``d`` strictly greater than each τ (NaN for no points)."""
    taus = np.asarray(taus, dtype=float)
    if d.size == 0:
        return np.full(taus.shape, np.nan)
    at_or_below = np.searchsorted(np.sort(d), taus, side="right")
    return 1.0 - at_or_below / d.size


def area_under_survival(d: np.ndarray, tau_max: float) -> float:
    """Exact integral of the step function Î(τ) over [0, τ_max].

    ∫₀^T 1{d > τ} dτ = min(d, T), so the area is the mean of the clipped distances:
    no τ grid, no truncation error (censored failures contribute T).
    """
    if d.size == 0:
        return float("nan")
    return float(np.minimum(d, tau_max).mean())


def pooled_tau_max(distance, correct, *, conditional: bool = True, failures: str = "censor") -> float:
    """Default τ_max: the largest finite distance of the whole audit (NaN when none is finite)."""
    d = effective_distances(distance, correct, conditional=conditional, failures=failures)
    finite = d[np.isfinite(d)]
    return float(finite.max()) if finite.size else float("nan")


def resolve_tau_max(tau_max, distance, correct, *, conditional: bool = True, failures: str = "censor") -> float:
    """Turn the ``tau_max`` setting (``"pooled_max"`` or a positive number) into a number."""
    if tau_max == "pooled_max":
        return pooled_tau_max(distance, correct, conditional=conditional, failures=failures)
    try:
        value = float(tau_max)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise ValueError(f"tau_max={tau_max!r}: use 'pooled_max' or a positive number")
    return value


def sigma(distance, correct, in_group, tau_max: float, *, conditional: bool = True, failures: str = "censor") -> float:
    """σ(P) = (AUC(Î_P) − AUC(Î_rest)) / AUC(Î_rest); negative when P is closer to the boundary.

    NaN when P or its complement has no points, or the complement's area is zero.
    """
    in_group = np.asarray(in_group, dtype=bool)
    distance, correct = np.asarray(distance, dtype=float), np.asarray(correct, dtype=bool)
    kw = dict(conditional=conditional, failures=failures)
    auc_p = area_under_survival(effective_distances(distance[in_group], correct[in_group], **kw), tau_max)
    auc_rest = area_under_survival(effective_distances(distance[~in_group], correct[~in_group], **kw), tau_max)
    if not np.isfinite(auc_p) or not np.isfinite(auc_rest) or auc_rest == 0:
        return float("nan")
    return (auc_p - auc_rest) / auc_rest


def unknown_spans(distance, correct, success, cap, tau_max: float, *, conditional: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per counting point, the least and the most its clipped distance min(d, τ_max) could be.

    A measured distance is what it is. A failure (an attack that gave up, smoothing that abstained) says
    nothing of the distance: anywhere in [0, τ_max]. A distance at the estimator's ``cap`` says only that
    the true one is at least the cap: [cap, τ_max]. Misclassified points count as 0 in unconditional mode.
    """
    distance, correct = np.asarray(distance, dtype=float), np.asarray(correct, dtype=bool)
    success, cap = np.asarray(success, dtype=bool), np.broadcast_to(np.asarray(cap, dtype=float), distance.shape)
    counting = correct if conditional else np.ones_like(correct)
    measured = np.where(correct, np.minimum(np.where(success, distance, 0.0), tau_max), 0.0)
    capped = correct & success & at_cap(distance, cap)
    failed = correct & ~success
    least = np.where(failed, 0.0, measured)
    most = np.where(failed | capped, tau_max, measured)
    return least[counting], most[counting]


def at_cap(distance, cap) -> np.ndarray:
    """Which distances sit at the estimator's cap (up to float32 rounding, in which records store them)."""
    distance, cap = np.asarray(distance, dtype=float), np.asarray(cap, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(cap) & (distance >= cap * (1 - 1e-6))


def sigma_band(distance, correct, success, cap, in_group, tau_max: float, *, conditional: bool = True) -> tuple[float, float]:
    """The least and the most σ(P) could be, wherever the failed and capped points' true distances lie
    (worst-case bounds: σ grows with P's area and shrinks with the rest's, so the least puts P's unknown
    points at their least and the rest's at their most, and the most the reverse). Equal to σ where
    nothing is unknown; NaN where σ is."""
    in_group = np.asarray(in_group, dtype=bool)
    counting = np.asarray(correct, dtype=bool) if conditional else np.ones_like(in_group)
    least, most = unknown_spans(distance, correct, success, cap, tau_max, conditional=conditional)
    inside = in_group[counting]
    if not inside.any() or inside.all():
        return float("nan"), float("nan")
    low_p, high_p, low_rest, high_rest = least[inside].mean(), most[inside].mean(), least[~inside].mean(), most[~inside].mean()
    with np.errstate(divide="ignore", invalid="ignore"):   # the rest's least area 0: σ has no upper bound (+inf)
        return float((low_p - high_rest) / high_rest), float((high_p - low_rest) / low_rest)


def robustness_bias(distance, correct, in_group, taus, *, conditional: bool = True, failures: str = "censor") -> np.ndarray:
    """RB(P, τ) = |Î_P(τ) − Î_rest(τ)| at each τ (NaN where either side is empty)."""
    in_group = np.asarray(in_group, dtype=bool)
    distance, correct = np.asarray(distance, dtype=float), np.asarray(correct, dtype=bool)
    kw = dict(conditional=conditional, failures=failures)
    inside = survival(effective_distances(distance[in_group], correct[in_group], **kw), taus)
    rest = survival(effective_distances(distance[~in_group], correct[~in_group], **kw), taus)
    return np.abs(inside - rest)
