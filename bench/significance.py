"""Time the bootstrap interval and the permutation test of σ: 5,000 points × 10 groups × 1,000 resamples.

    python bench/significance.py
"""

import time

import numpy as np

from robustness_bias.analysis import metrics, significance

rng = np.random.default_rng(0)
groups = rng.integers(10, size=5000)
distance = rng.exponential(size=5000) * np.where(groups == 3, 0.6, 1.0)
correct = rng.random(5000) < 0.9
tau_max = metrics.pooled_tau_max(distance, correct)
for name, test in (("bootstrap interval", lambda: significance.bootstrap_sigma(distance, correct, groups, tau_max, resamples=1000)),
                   ("permutation p-values", lambda: significance.permutation_p_values(distance, correct, groups, tau_max,
                                                                              permutations=1000))):
    start = time.perf_counter()
    test()
    print(f"{name}: {time.perf_counter() - start:.2f} s for 5,000 points × 10 groups × 1,000 resamples")
