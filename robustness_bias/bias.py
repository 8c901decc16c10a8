"""Robustness-bias metrics of SPEC §1: survival curves, RB(P, τ) and σ(P).

Plain numpy, so that reports can be rebuilt from saved records without torch.

Every function takes per-point arrays from one audit:

- ``distance``: pixel-space L2 distance to the decision boundary; ``+inf`` where the
  estimator failed; ignored (may be NaN) where the point is misclassified.
- ``correct``: whether the model classified the point correctly.

Two forms of the survival curve Î_P(τ) (the share of P farther than τ from the boundary):
*conditional* (default, the paper's Eq. 1–3) counts only correctly classified points;
*unconditional* (Eq. 4–6) divides by |P| and counts misclassified points as distance 0.
Failures (``+inf``) are either *censored* (default: beyond every τ) or *dropped*.
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


def robustness_bias(distance, correct, in_group, taus, *, conditional: bool = True, failures: str = "censor") -> np.ndarray:
    """RB(P, τ) = |Î_P(τ) − Î_rest(τ)| at each τ (NaN where either side is empty)."""
    in_group = np.asarray(in_group, dtype=bool)
    distance, correct = np.asarray(distance, dtype=float), np.asarray(correct, dtype=bool)
    kw = dict(conditional=conditional, failures=failures)
    inside = survival(effective_distances(distance[in_group], correct[in_group], **kw), taus)
    rest = survival(effective_distances(distance[~in_group], correct[~in_group], **kw), taus)
    return np.abs(inside - rest)


def _point_values(distance, correct, tau_max: float, conditional: bool, failures: str) -> tuple[np.ndarray, np.ndarray]:
    """Per point: whether it counts in the survival curves, and its clipped distance min(d, τ_max)."""
    distance = np.asarray(distance, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    counts = correct.copy() if conditional else np.ones_like(correct)
    value = np.where(correct, distance, 0.0)
    if failures == "drop":
        counts &= np.isfinite(value)
    value = np.minimum(np.where(counts, value, 0.0), tau_max)
    return counts.astype(float), value


def _group_count(groups: np.ndarray, n_groups: int | None) -> int:
    """Groups are coded 0..G−1; G defaults to one more than the largest code present."""
    return n_groups if n_groups is not None else (int(groups.max()) + 1 if groups.size else 0)


def _sigmas_from_sums(num: np.ndarray, den: np.ndarray, total_num: np.ndarray, total_den: np.ndarray) -> np.ndarray:
    """σ per (replicate, group) from the weighted sums of clipped distances and counts of each group."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = num / den
        rest = (total_num[:, None] - num) / (total_den[:, None] - den)
        sigma = (inside - rest) / rest
    return np.where(np.isfinite(sigma), sigma, np.nan)


def bootstrap_sigma(distance, correct, groups, tau_max: float, *, n_groups: int | None = None, resamples: int = 1000,
                    level: float = 0.95, seed: int = 0, conditional: bool = True,
                    failures: str = "censor") -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of σ(P) for every group, resampling the audit's points.

    ``groups`` holds each point's group code (0..G−1). All replicates come from one matrix
    product of multinomial resampling counts, not a Python loop per resample; τ_max stays the
    full audit's. Returns (low, high), each of length G.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = _group_count(groups, n_groups)
    counts, value = _point_values(distance, correct, tau_max, conditional, failures)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(groups), np.full(len(groups), 1.0 / len(groups)), size=resamples).astype(float)
    member = np.eye(n_groups)[groups]                                    # (n, G)
    num = weights @ (member * (counts * value)[:, None])
    den = weights @ (member * counts[:, None])
    sigmas = _sigmas_from_sums(num, den, weights @ (counts * value), weights @ counts)
    tail = (1 - level) / 2
    with np.errstate(all="ignore"):
        low, high = np.nanquantile(sigmas, [tail, 1 - tail], axis=0) if resamples else (np.full(n_groups, np.nan),) * 2
    return low, high


def permutation_p_values(distance, correct, groups, tau_max: float, *, n_groups: int | None = None,
                         permutations: int = 1000, seed: int = 0, conditional: bool = True,
                         failures: str = "censor") -> np.ndarray:
    """Two-sided permutation p-value of σ(P) ≠ 0 for every group, shuffling group membership.

    Only the points that count for σ are shuffled (correctly classified ones in conditional mode,
    finite ones under ``failures="drop"``): each group keeps its own number of counting points, as
    under the null hypothesis that its distances are exchangeable with the rest's. Shuffling every
    point would hand a group with low accuracy more counting points than it has, narrow the null
    distribution and reject too often (tests/test_significance.py simulates it).
    p = (1 + #{|σ_perm| ≥ |σ_obs|}) / (1 + permutations), so it is never 0.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = _group_count(groups, n_groups)
    counts, value = _point_values(distance, correct, tau_max, conditional, failures)
    counting = counts > 0
    groups, value = groups[counting], value[counting]

    def sums(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = labels.shape[0]
        flat = (np.arange(rows)[:, None] * n_groups + labels).ravel()
        num = np.bincount(flat, weights=np.tile(value, rows), minlength=rows * n_groups)
        den = np.bincount(flat, minlength=rows * n_groups).astype(float)
        return num.reshape(rows, n_groups), den.reshape(rows, n_groups)

    total_num, total_den = np.array([value.sum()]), np.array([float(value.size)])
    observed = _sigmas_from_sums(*sums(groups[None, :]), total_num, total_den)[0]
    rng = np.random.default_rng(seed)
    shuffled = rng.permuted(np.broadcast_to(groups, (permutations, groups.size)), axis=1)
    permuted = _sigmas_from_sums(*sums(shuffled), np.repeat(total_num, permutations), np.repeat(total_den, permutations))
    with np.errstate(invalid="ignore"):
        extreme = (np.abs(permuted) >= np.abs(observed)[None, :] - 1e-12).sum(0)
    return np.where(np.isfinite(observed), (1 + extreme) / (1 + permutations), np.nan)


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate); NaNs stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size == 0:
        return adjusted
    order = finite[np.argsort(p[finite])]
    ranked = p[order] * finite.size / np.arange(1, finite.size + 1)
    adjusted[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    return adjusted
