"""How sure is a group's σ(P): bootstrap intervals, permutation p-values and the Benjamini–Hochberg
adjustment across the groups of one audit (the paper's σ of §1 with the uncertainty it leaves out).

Every function takes an audit's per-point arrays as :mod:`robustness_bias.analysis.metrics` does,
plus each point's group code (0..G−1), and works on all groups and replicates at once.
"""

from __future__ import annotations

import numpy as np


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


def _log_ratio(n, total, squares, n_all, total_all, squares_all) -> tuple[np.ndarray, np.ndarray]:
    """log(AUC_P / AUC_rest) = log(1 + σ) and its delta-method standard error, from each group's count, sum and
    sum of squares of clipped distances (the rest's are the audit's totals minus the group's)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        parts = []
        for count, first, second in ((n, total, squares), (n_all - n, total_all - total, squares_all - squares)):
            mean = first / count
            variance = np.maximum(second - first * mean, 0.0) / (count - 1)   # s², unbiased
            parts.append((mean, variance / (count * mean ** 2)))               # var(log mean) ≈ s² / (n m²)
        (inside, v_inside), (rest, v_rest) = parts
        return np.log(inside / rest), np.sqrt(v_inside + v_rest)


def bootstrap_sigma(distance, correct, groups, tau_max: float, *, n_groups: int | None = None, resamples: int = 1000,
                    level: float = 0.95, seed: int = 0, conditional: bool = True,
                    failures: str = "censor") -> tuple[np.ndarray, np.ndarray]:
    """Studentized bootstrap (bootstrap-t) interval of σ(P) for every group, on log(1 + σ) = log(AUC_P / AUC_rest).

    Both areas are restricted means of min(d, τ_max), so 1 + σ is a ratio of restricted mean survival times; its
    log gets the usual delta-method standard error √(s²_P / (n_P m²_P) + s²_rest / (n_rest m²_rest)). Each replicate
    resamples every group's counting points within the group (n_P and n_rest stay fixed, as in the permutation
    test), and studentizes its log ratio with its own standard error; the interval inverts the quantiles of
    those t values and maps back with σ = e^θ − 1. A percentile bootstrap over all points covered the true σ
    91% of the time for a group of ~20 counting points at 95% nominal; this one 94% (tests/test_significance.py
    simulates it, docs/design.md "Intervals of σ" compares the methods). Returns (low, high), each of length G:
    NaN where the group or its complement has fewer than 2 counting points or an area of 0 (no log ratio),
    σ itself where no replicate varies (every counting point at one value, e.g. all censored).
    """
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = _group_count(groups, n_groups)
    if not resamples:
        return np.full(n_groups, np.nan), np.full(n_groups, np.nan)
    counts, value = _point_values(distance, correct, tau_max, conditional, failures)
    counting = counts > 0
    order = np.argsort(groups[counting], kind="stable")
    groups, value = groups[counting][order], value[counting][order]     # counting points, group by group
    size = np.bincount(groups, minlength=n_groups)
    n = size.astype(float)
    total = np.bincount(groups, weights=value, minlength=n_groups)
    squares = np.bincount(groups, weights=value ** 2, minlength=n_groups)
    theta, error = _log_ratio(n, total, squares, n.sum(), total.sum(), squares.sum())
    undefined = ~(np.isfinite(theta) & np.isfinite(error))
    rng = np.random.default_rng(seed)
    start = np.cumsum(size) - size
    present = size > 0
    first_of_own, size_of_own = start[groups], n[groups]                # per slot: where its group starts, its size
    t = np.empty((resamples, n_groups))
    chunk = max(1, 2 ** 16 // max(groups.size, 1))     # replicates per step: arrays of 512 KB, in cache (5× faster)
    for first in range(0, resamples, chunk):
        rows = min(chunk, resamples - first)
        pick = rng.random((rows, groups.size))
        pick *= size_of_own                      # u ∈ [0, 1): ⌊u·n_g⌋ < n_g, a point of the slot's own group
        pick = pick.astype(np.intp)
        pick += first_of_own
        drawn = value[pick]
        sums, sums_sq = np.zeros((rows, n_groups)), np.zeros((rows, n_groups))
        sums[:, present] = np.add.reduceat(drawn, start[present], axis=1)
        sums_sq[:, present] = np.add.reduceat(drawn ** 2, start[present], axis=1)
        replicate, replicate_error = _log_ratio(n, sums, sums_sq, n.sum(), sums.sum(1, keepdims=True),
                                                sums_sq.sum(1, keepdims=True))
        with np.errstate(divide="ignore", invalid="ignore"):
            t[first:first + rows] = (replicate - theta) / replicate_error
    t[~np.isfinite(t)] = np.nan            # undefined groups, and replicates whose standard error is 0
    tail = (1 - level) / 2
    varies = ~np.isnan(t).all(0)
    t_low, t_high = np.full(n_groups, np.nan), np.full(n_groups, np.nan)
    if varies.any():
        t_low[varies], t_high[varies] = np.nanquantile(t[:, varies], [tail, 1 - tail], axis=0)
    # NaN · inf where undefined; e^θ overflows to +inf for the unbounded intervals of 2–3 counting points
    with np.errstate(invalid="ignore", over="ignore"):
        low = np.expm1(np.where(varies, theta - t_high * error, theta))
        high = np.expm1(np.where(varies, theta - t_low * error, theta))
    return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


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
