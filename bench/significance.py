"""Time the bootstrap interval and the permutation test of σ, and simulate how often the interval covers the true σ.

    python bench/significance.py                          # time both: 5,000 points × 10 groups × 1,000 resamples
    python bench/significance.py --coverage 10000         # coverage of the 95% interval, 10,000 audits a scenario

Each coverage scenario is an audit of one group against the rest, two-sided: distances exponential, a share of
attacks failed (+inf, censored at τ_max) or distances capped (smoothing's largest certifiable radius); τ_max and
the true σ are fixed, the latter exact from restricted means (see restricted_mean). tests/test_significance.py
asserts the coverage of the first four; docs/design.md "Intervals of σ" records the table.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import numpy as np

from robustness_bias.analysis import metrics, significance


class Side(NamedTuple):
    """Points of the group (or the rest): how many, the share correctly classified, the mean of their exponential
    distances, the share of failed attacks (+inf) and a cap on the distances."""
    points: int
    accuracy: float
    mean: float
    failed: float = 0.0
    cap: float = np.inf


class Scenario(NamedTuple):
    group: Side
    rest: Side
    tau_max: float


ISSUE = Side(40, 0.5, 0.8), Side(400, 0.9, 1.0)      # ~20 counting points against ~360 (issue 33)
WIDE = Side(300, 0.5, 0.8), Side(400, 0.9, 1.0)       # ~150 counting points
SCENARIOS = {
    "20 counting points": Scenario(*ISSUE, tau_max=6.0),
    "150 counting points": Scenario(*WIDE, tau_max=6.0),
    "20, failures 20% / 5%": Scenario(ISSUE[0]._replace(failed=0.2), ISSUE[1]._replace(failed=0.05), tau_max=6.0),
    "20, capped (~60% at the cap)": Scenario(ISSUE[0]._replace(cap=0.4), ISSUE[1]._replace(cap=0.4), tau_max=0.4),
    "150, failures 20% / 5%": Scenario(WIDE[0]._replace(failed=0.2), WIDE[1]._replace(failed=0.05), tau_max=6.0),
    "150, capped (~60% at the cap)": Scenario(WIDE[0]._replace(cap=0.4), WIDE[1]._replace(cap=0.4), tau_max=0.4),
    "20, failures 55% / 50%": Scenario(ISSUE[0]._replace(failed=0.55), ISSUE[1]._replace(failed=0.5), tau_max=6.0),
    "10 counting points": Scenario(Side(20, 0.5, 0.8), ISSUE[1], tau_max=6.0),
    "6 counting points": Scenario(Side(12, 0.5, 0.8), ISSUE[1], tau_max=6.0),
    "6, capped (~60% at the cap)": Scenario(Side(12, 0.5, 0.8, cap=0.4), ISSUE[1]._replace(cap=0.4), tau_max=0.4),
}


def restricted_mean(side: Side, tau_max: float) -> float:
    """E[min(D, τ_max)] of a correctly classified point: D = +inf with probability ``failed``, else
    min(Exp(mean), cap), and ∫₀^b P(Exp(μ) > t) dt = μ(1 − e^(−b/μ)) for b = min(cap, τ_max)."""
    bound = min(side.cap, tau_max)
    return (1 - side.failed) * side.mean * -np.expm1(-bound / side.mean) + side.failed * tau_max


def true_sigma(scenario: Scenario) -> float:
    return restricted_mean(scenario.group, scenario.tau_max) / restricted_mean(scenario.rest, scenario.tau_max) - 1


def simulate(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One audit's distances, correctness and group codes (0: the group, 1: the rest)."""
    distance, correct = [], []
    for side in (scenario.group, scenario.rest):
        d = np.minimum(rng.exponential(side.mean, side.points), side.cap)
        d[rng.random(side.points) < side.failed] = np.inf
        distance.append(d)
        correct.append(rng.random(side.points) < side.accuracy)
    groups = np.repeat([0, 1], [scenario.group.points, scenario.rest.points])
    return np.concatenate(distance), np.concatenate(correct), groups


def coverage(scenario: Scenario, simulations: int, *, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Over ``simulations`` audits, the shares whose interval of the group's σ covers the true σ, lies wholly
    above it, lies wholly below it, or is missing (NaN: fewer than 2 counting points). Audit i draws its data
    from the seed (seed, i) and bootstraps with seed i."""
    truth, tally = true_sigma(scenario), dict.fromkeys(("covered", "too high", "too low", "missing"), 0)
    for i in range(simulations):
        distance, correct, groups = simulate(scenario, np.random.default_rng([seed, i]))
        low, high = significance.bootstrap_sigma(distance, correct, groups, scenario.tau_max, n_groups=2,
                                                 level=level, seed=i)
        low, high = low[0], high[0]
        tally["covered" if low <= truth <= high else "too high" if low > truth else "too low" if high < truth
              else "missing"] += 1
    return {outcome: count / simulations for outcome, count in tally.items()}


def timing() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(10, size=5000)
    distance = rng.exponential(size=5000) * np.where(groups == 3, 0.6, 1.0)
    correct = rng.random(5000) < 0.9
    tau_max = metrics.pooled_tau_max(distance, correct)
    for name, test in (("bootstrap interval", lambda: significance.bootstrap_sigma(distance, correct, groups, tau_max,
                                                                                   resamples=1000)),
                       ("permutation p-values", lambda: significance.permutation_p_values(distance, correct, groups,
                                                                                          tau_max, permutations=1000))):
        start = time.perf_counter()
        test()
        print(f"{name}: {time.perf_counter() - start:.2f} s for 5,000 points × 10 groups × 1,000 resamples")


def coverage_table(simulations: int) -> None:
    print(f"95% interval of σ, {simulations} simulated audits a scenario, 1,000 resamples each")
    print(f"  {'scenario':<30} {'true σ':>7} {'coverage':>9} {'±2 SE':>6} {'too high':>9} {'too low':>8} {'missing':>8}")
    for name, scenario in SCENARIOS.items():
        shares = coverage(scenario, simulations)
        error = 2 * np.sqrt(shares["covered"] * (1 - shares["covered"]) / simulations)
        print(f"  {name:<30} {true_sigma(scenario):>+7.3f} {shares['covered']:>9.3f} {error:>6.3f} "
              f"{shares['too high']:>9.3f} {shares['too low']:>8.3f} {shares['missing']:>8.3f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coverage", type=int, metavar="AUDITS", help="simulate coverage with this many audits")
    arguments = parser.parse_args()
    coverage_table(arguments.coverage) if arguments.coverage else timing()
