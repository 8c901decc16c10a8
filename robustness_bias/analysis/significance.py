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
