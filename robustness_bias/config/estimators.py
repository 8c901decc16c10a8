"""The schemas of ``conf/estimator``: each estimator's parameters, ranges and defaults, given here once.

The estimators' classes take their defaults from these (``RandomizedSmoothing()`` is the command line's
``estimator=[rs]``) and check their arguments by these rules; the YAML files name only the class and what
an option changes (``cw_paper``: the paper's budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from .rules import FLAG, ConfigError, at_least_zero, one_of, optional, positive, probability, setting, whole


@dataclass
class DeepFoolConfig:
    """DeepFool L2 (an upper bound on the distance to the boundary), at the paper's settings (foolbox 3's)."""

    _target_: str = MISSING   # the class: conf/estimator/*.yaml
    steps: int = setting(whole(1, 100), 100)
    candidates: int = setting(whole(2, 10), 10)   # top-k classes of the clean logits
    overshoot: float = setting(at_least_zero(0.02), 0.02)
    # loop | batched (one vmapped backward pass) | replicated (one pass over copies): how the candidates' gradients
    # are computed; the same distances up to rounding (which is fastest where: docs/benchmarks.md)
    gradients: str = setting(one_of("loop", "batched", "replicated"), "loop", shapes_results=False)
    # on a GPU, replay each step from a CUDA graph (one per step function at the pool's width, kept for the rest of
    # the audit): the eager results up to rounding
    cuda_graphs: bool = setting(FLAG, False, shapes_results=False)


@dataclass
class CarliniWagnerConfig:
    """Carlini–Wagner L2 (an upper bound on the distance to the boundary), with a budget that converges on the
    default run and the quick tier, where the paper's (conf/estimator/cw_paper.yaml) gives up on many samples
    (docs/benchmarks.md, "A CW that converges by default")."""

    _target_: str = MISSING   # the class: conf/estimator/*.yaml
    # runs per sample at most: c grows ×10 until the first success, then bisects
    binary_search_steps: int = setting(whole(1, 5), 10)
    steps: int = setting(whole(1, 100), 300)   # Adam iterations per binary-search step at most
    initial_const: float = setting(positive(0.01), 0.01)
    confidence: float = setting(at_least_zero(0), 0.0)   # κ
    # with per_dimension, the L2 length of an Adam step: 0.05 per value on 8×8 digits, 0.0072 on 3×32×32 faces (a
    # rate per value, as the paper's 5e-3, cannot move the digits' saturated pixels)
    learning_rate: float = setting(positive(0.4), 0.4)
    per_dimension: bool = setting(FLAG, True)   # learning_rate / √(input values): a step's L2 length
    abort_early: bool = setting(FLAG, True)   # each sample stops when its loss stalls
    warm_start: bool = setting(FLAG, True)
    refine_steps: int = setting(whole(0, 10), 10)
    cuda_graphs: bool = setting(FLAG, False, shapes_results=False)   # as DeepFoolConfig's


@dataclass
class FastMinimumNormConfig:
    """Fast Minimum-Norm L2, Pintor et al. 2021 (an upper bound on the distance to the boundary), at the
    reference's settings, then a bisection onto the boundary."""

    _target_: str = MISSING   # the class: conf/estimator/*.yaml
    steps: int = setting(whole(1, 100), 100)
    alpha_init: float = setting(positive(1.0), 1.0)   # α₀: the step length, annealed by a cosine to alpha_final
    alpha_final: Optional[float] = setting(optional(positive(0.01), "for alpha_init / 100", "null"), None)
    gamma_init: float = setting(probability(0.05), 0.05)   # γ₀: ε shrinks or grows by 1 ± γ per step, annealed
    gamma_final: float = setting(probability(0.001), 0.001)
    refine_steps: int = setting(whole(0, 10), 10)   # forward passes of the final bisection (0: none)
    # with patience > 0 a sample stops once its smallest adversarial norm has not shrunk (fmn.STALL_FACTOR) for that
    # many steps; 0 (the default): every sample runs all steps, as the reference does. Not safe by default: on the
    # bench's digits FMN still tightens until its last step (docs/benchmarks.md, "FMN in the pool")
    patience: int = setting(whole(0, 10), 0)

    def check(self, key: str) -> None:
        if self.gamma_final > self.gamma_init:
            name = f"{key}." if key else ""
            raise ConfigError(f"{name}gamma_final={self.gamma_final} {name}gamma_init={self.gamma_init}: γ anneals "
                              f"down, so gamma_final must not exceed gamma_init. Fix: pass {name}gamma_final=0.001")


@dataclass
class SmoothingConfig:
    """Randomized smoothing's certified radius (a lower bound, of the smoothed classifier; Cohen et al.), at the
    paper's settings: σ 0.125, N0 100, N 100,000, α 0.001 (on every 5th test image: its plan's)."""

    _target_: str = MISSING   # the class: conf/estimator/*.yaml
    sigma: float = setting(positive(0.125), 0.125)
    n0: int = setting(whole(1, 100), 100)
    n: int = setting(whole(1, 100000), 100_000)
    alpha: float = setting(probability(0.001), 0.001)
    # noisy images per forward pass (several images share one); null: the fastest, measured; radii do not depend on it
    forward_batch: Optional[int] = setting(optional(whole(1, 1000), "to measure the fastest", "null"), None,
                                           shapes_results=False)
    noise_chunk: int = setting(whole(1, 500), 500)   # noise is seeded per (sample, chunk): radii ignore batching
    seed: int = setting(whole(0, 0), 0)
    # torch.compile the noisy forward passes; an audit turns it on with audit.plan.rs.compile (auditing/plan.py)
    compile: bool = setting(FLAG, False)


@dataclass
class ExactConfig:
    """The closed-form distance of an affine model (model=logreg); refuses other models."""

    _target_: str = MISSING   # the class: conf/estimator/*.yaml
    rtol: float = setting(positive(0.0001), 1e-4)   # tolerance of the check that the model really is affine
