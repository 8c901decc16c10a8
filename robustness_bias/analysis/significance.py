"""How sure is a group's σ(P): bootstrap intervals, permutation p-values and the Benjamini–Hochberg
adjustment across the groups of one audit (the paper's σ of §1 with the uncertainty it leaves out), and σ
adjusted for other attributes by direct standardization (docs/design.md, "σ adjusted for other attributes").

Every function takes an audit's per-point arrays as :mod:`robustness_bias.analysis.metrics` does,
plus each point's group code (0..G−1) and optionally its stratum code (0..S−1: the combination of the
adjusting attributes' values), and works on all groups and replicates at once. Without strata every point
is in one stratum, and the adjusted σ is σ itself.

Standardization: group P keeps its own distribution over the strata, and the rest is reweighted to it, so
AUC_rest becomes Σ_s w_s · AUC_rest,s with w_s P's share of its counting points in stratum s. A stratum
where the rest has fewer than ``min_stratum`` counting points cannot be compared: P's points there leave
both sides, and :func:`incomparable_counts` says how many.
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
    return counts.astype(bool), value


def _code_count(codes: np.ndarray, count: int | None) -> int:
    """Codes run 0..K−1; K defaults to one more than the largest code present."""
    return count if count is not None else (int(codes.max()) + 1 if codes.size else 0)


class _Cells:
    """An audit's counting points sorted by cell (group × stratum), with each cell's count and where it starts."""

    def __init__(self, distance, correct, groups, strata, tau_max, n_groups, n_strata, conditional, failures):
        groups = np.asarray(groups, dtype=np.int64)
        strata = np.zeros_like(groups) if strata is None else np.asarray(strata, dtype=np.int64)
        self.n_groups, self.n_strata = _code_count(groups, n_groups), _code_count(strata, n_strata)
        counting, value = _point_values(distance, correct, tau_max, conditional, failures)
        self.points = groups[counting], strata[counting], value[counting]   # in the audit's order
        cell = groups[counting] * self.n_strata + strata[counting]
        order = np.argsort(cell, kind="stable")
        self.cell, self.value = cell[order], value[counting][order]
        self.size = np.bincount(self.cell, minlength=self.n_groups * self.n_strata)
        self.start = np.cumsum(self.size) - self.size

    def shape(self, flat: np.ndarray) -> np.ndarray:
        """Per-cell values (…, G·S) as (…, G, S)."""
        return flat.reshape(*flat.shape[:-1], self.n_groups, self.n_strata)

    def sums(self, value: np.ndarray, weights=None) -> np.ndarray:
        """Per-cell sums (G, S) of per-point values in cell order."""
        return self.shape(np.bincount(self.cell, weights=value if weights is None else weights,
                                      minlength=self.n_groups * self.n_strata).astype(float))


def _rest(per_cell: np.ndarray) -> np.ndarray:
    """Per (group, stratum): the sum over the other groups in the stratum."""
    return per_cell.sum(-2, keepdims=True) - per_cell


def comparable_weights(counts: np.ndarray, min_stratum: int = 1) -> np.ndarray:
    """Each group's weight per stratum, (G, S): its share of its counting points among the strata where the rest
    has at least ``min_stratum`` counting points (0 elsewhere; rows of 0 where no stratum is comparable)."""
    kept = np.where(_rest(counts) >= min_stratum, counts, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(kept / kept.sum(-1, keepdims=True))


def incomparable_counts(counts: np.ndarray, min_stratum: int = 1) -> np.ndarray:
    """Per (group, stratum): the group's counting points left out because the rest has too few there."""
    return np.where(_rest(counts) < min_stratum, counts, 0.0)


def _standardized_means(n, total, weight):
    """AUC_P and the rest's AUC standardized to P's strata, (…, G), from per-cell counts and sums (…, G, S)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(weight > 0, weight * (total / n), 0.0).sum(-1)
        rest = np.where(weight > 0, weight * (_rest(total) / _rest(n)), 0.0).sum(-1)
    return inside, rest


def _log_ratio(n, total, squares, weight) -> tuple[np.ndarray, np.ndarray]:
    """θ = log(AUC_P / AUC_rest) = log(1 + σ) and its delta-method standard error, (…, G), from per-cell counts,
    sums and sums of squares of clipped distances (…, G, S): var(Σ_s w_s m_s) = Σ_s w_s² s²_s / n_s for each side,
    and var(log mean) ≈ var(mean) / mean². A cell of one point has no spread (s² = 0)."""
    inside, rest = _standardized_means(n, total, weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        variances = []
        for count, first, second in ((n, total, squares), (_rest(n), _rest(total), _rest(squares))):
            spread = np.maximum(second - first * first / count, 0.0) / np.maximum(count - 1, 1)   # s², unbiased
            variances.append(np.where(weight > 0, weight ** 2 * spread / count, 0.0).sum(-1))
        error = np.sqrt(variances[0] / inside ** 2 + variances[1] / rest ** 2)
        return np.log(inside / rest), error


def standardized_sigma(distance, correct, groups, tau_max: float, *, strata=None, n_groups: int | None = None,
                       n_strata: int | None = None, min_stratum: int = 1, conditional: bool = True,
                       failures: str = "censor") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """σ(P) of every group with the rest standardized to P's strata, each group's counting points per stratum,
    (G, S), and those of them left out as incomparable, (G, S). Without strata, σ(P) itself. NaN where nothing of
    P or the rest is comparable, or the rest's area is 0."""
    cells = _Cells(distance, correct, groups, strata, tau_max, n_groups, n_strata, conditional, failures)
    n = cells.sums(cells.value, np.ones_like(cells.value))
    weight = comparable_weights(n, min_stratum)
    inside, rest = _standardized_means(n, cells.sums(cells.value), weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = inside / rest - 1
    defined = weight.any(-1) & np.isfinite(sigma)
    return np.where(defined, sigma, np.nan), n, incomparable_counts(n, min_stratum)


def bootstrap_sigma(distance, correct, groups, tau_max: float, *, strata=None, n_groups: int | None = None,
                    n_strata: int | None = None, min_stratum: int = 1, resamples: int = 1000, level: float = 0.95,
                    seed: int = 0, conditional: bool = True, failures: str = "censor") -> tuple[np.ndarray, np.ndarray]:
    """Studentized bootstrap (bootstrap-t) interval of σ(P) for every group, on log(1 + σ) = log(AUC_P / AUC_rest);
    with ``strata``, of σ standardized to P's strata.

    Both areas are restricted means of min(d, τ_max), so 1 + σ is a ratio of restricted mean survival times; its
    log gets the delta-method standard error of :func:`_log_ratio`. Each replicate resamples the counting points
    within every cell (group × stratum: the counts stay fixed, as in the permutation test, and so do the
    standardization's weights), and studentizes its log ratio with its own standard error; the interval inverts
    the quantiles of those t values and maps back with σ = e^θ − 1. A percentile bootstrap over all points
    under-covered for groups of ~20 counting points; this one holds its level (tests/test_significance.py
    simulates it, docs/design.md "Intervals of σ" compares the methods). Returns
    (low, high), each of length G: NaN where the group or its comparable rest has fewer than 2 counting points or
    an area of 0 (no log ratio), σ itself where no replicate varies (every counting point at one value, e.g. all
    censored).
    """
    cells = _Cells(distance, correct, groups, strata, tau_max, n_groups, n_strata, conditional, failures)
    if not resamples:
        return np.full(cells.n_groups, np.nan), np.full(cells.n_groups, np.nan)
    n = cells.sums(cells.value, np.ones_like(cells.value))
    weight = comparable_weights(n, min_stratum)
    kept = weight > 0
    theta, error = _log_ratio(n, cells.sums(cells.value), cells.sums(cells.value ** 2), weight)
    undefined = ((n * kept).sum(-1) < 2) | ((_rest(n) * kept).sum(-1) < 2) | ~(np.isfinite(theta) & np.isfinite(error))
    rng = np.random.default_rng(seed)
    present = cells.size > 0
    first_of_own, size_of_own = cells.start[cells.cell], cells.size[cells.cell].astype(float)   # per slot: its cell
    t = np.empty((resamples, cells.n_groups))
    points = cells.value.size
    chunk = max(1, 2 ** 16 // max(points, 1))     # replicates per step: arrays of 512 KB, in cache (5× faster)
    for first in range(0, resamples, chunk):
        rows = min(chunk, resamples - first)
        pick = rng.random((rows, points))
        pick *= size_of_own                      # u ∈ [0, 1): ⌊u·n_c⌋ < n_c, a point of the slot's own cell
        pick = pick.astype(np.intp)
        pick += first_of_own
        drawn = cells.value[pick]
        sums, sums_sq = np.zeros((rows, cells.size.size)), np.zeros((rows, cells.size.size))
        sums[:, present] = np.add.reduceat(drawn, cells.start[present], axis=1)
        sums_sq[:, present] = np.add.reduceat(drawn ** 2, cells.start[present], axis=1)
        replicate, replicate_error = _log_ratio(n, cells.shape(sums), cells.shape(sums_sq), weight)
        with np.errstate(divide="ignore", invalid="ignore"):
            t[first:first + rows] = (replicate - theta) / replicate_error
    t[~np.isfinite(t)] = np.nan            # undefined groups, and replicates whose standard error is 0
    tail = (1 - level) / 2
    varies = ~np.isnan(t).all(0)
    t_low, t_high = np.full(cells.n_groups, np.nan), np.full(cells.n_groups, np.nan)
    if varies.any():
        t_low[varies], t_high[varies] = np.nanquantile(t[:, varies], [tail, 1 - tail], axis=0)
    # NaN · inf where undefined; e^θ overflows to +inf for the unbounded intervals of 2–3 counting points
    with np.errstate(invalid="ignore", over="ignore"):
        low = np.expm1(np.where(varies, theta - t_high * error, theta))
        high = np.expm1(np.where(varies, theta - t_low * error, theta))
    return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


def permutation_p_values(distance, correct, groups, tau_max: float, *, strata=None, n_groups: int | None = None,
                         n_strata: int | None = None, min_stratum: int = 1, permutations: int = 1000, seed: int = 0,
                         conditional: bool = True, failures: str = "censor") -> np.ndarray:
    """Two-sided permutation p-value of σ(P) ≠ 0 for every group, shuffling group membership; with ``strata``,
    of the standardized σ, shuffling within each stratum (the null: within a stratum, P's distances are
    exchangeable with the rest's).

    Only the points that count for σ are shuffled (correctly classified ones in conditional mode,
    finite ones under ``failures="drop"``): each group keeps its own number of counting points in every stratum,
    as under the null hypothesis. Shuffling every point would hand a group with low accuracy more counting
    points than it has, narrow the null distribution and reject too often (tests/test_significance.py
    simulates it). p = (1 + #{|σ_perm| ≥ |σ_obs|}) / (1 + permutations), so it is never 0.
    """
    cells = _Cells(distance, correct, groups, strata, tau_max, n_groups, n_strata, conditional, failures)
    by_stratum = np.argsort(cells.points[1], kind="stable")
    group, stratum, value = (values[by_stratum] for values in cells.points)
    n = cells.sums(cells.value, np.ones_like(cells.value))
    weight = comparable_weights(n, min_stratum)
    size = cells.n_groups * cells.n_strata

    def sigmas(labels: np.ndarray) -> np.ndarray:
        rows = labels.shape[0]
        flat = ((np.arange(rows)[:, None] * cells.n_groups + labels) * cells.n_strata + stratum).ravel()
        total = np.bincount(flat, weights=np.tile(value, rows), minlength=rows * size).reshape(rows, cells.n_groups, cells.n_strata)
        inside, rest = _standardized_means(n, total, weight)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(weight.any(-1), inside / rest - 1, np.nan)

    observed = sigmas(group[None, :])[0]
    rng = np.random.default_rng(seed)
    shuffled = np.empty((permutations, group.size), dtype=group.dtype)
    bounds = np.flatnonzero(np.diff(stratum)) + 1
    for start, stop in zip([0, *bounds], [*bounds, group.size]):
        shuffled[:, start:stop] = rng.permuted(np.broadcast_to(group[start:stop], (permutations, stop - start)), axis=1)
    permuted = sigmas(shuffled)
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
