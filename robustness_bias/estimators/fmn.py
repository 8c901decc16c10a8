"""Fast Minimum-Norm L2 (Pintor et al. 2021, "Fast Minimum-norm Adversarial Attacks through Adaptive
Norm Constraints"), batched: a minimum-norm attack that gives a tighter upper bound than DeepFool
and CW for a fraction of CW's passes (docs/benchmarks.md).

Each step takes one forward pass that keeps its graph and one backward pass of the logit
difference f_y − max_{k≠y} f_k. The perturbation δ moves by α along the normalised gradient
that lowers it and is projected onto the L2 ball of radius ε, then into the [0,1] box. The
radius adapts per sample: once an adversarial point is found it shrinks by (1 − γ) at
adversarial iterates (never above the smallest adversarial norm found) and grows by (1 + γ) at
others. α and γ are annealed by a cosine from α₀, γ₀ to α_T, γ_T over the ``steps`` steps. The
smallest adversarial perturbation seen is kept.

Before the first adversarial point the reference sets ε to ‖δ‖ plus the linearised distance to
the boundary, |f_y − max f_k| / ‖∇‖ (DeepFool's step). Here it goes a factor (1 + γ) of that
distance past it, and never shrinks until a point is found: on an affine model the reference's
first step lands exactly on the boundary, where the argmax may stay put for good, and on a
curved boundary it can creep towards it from inside for every step (both measured:
docs/benchmarks.md). On an affine model FMN reaches the boundary of the class with the largest
other logit, up to the annealed ε's last relative step γ_T: the nearest boundary for most
points, not for all (the exact distance takes the nearest over every class).

Unlike the reference code (and adv-lib's ``fmn``), the kept point is finally moved back along its
own direction onto the boundary by bisection (``refine_steps`` forward passes, as our CW does):
it can only shorten the reported perturbation.

A point counts as adversarial only where the true class's logit lies strictly below the best other
one (a tie is not misclassified: verdicts.fooled), and the point reported is checked once more alone,
in a forward pass of its own: batched kernels round differently at other batch sizes
(docs/benchmarks.md), and a point found adversarial in its batch at a margin of a few rounding
errors can be a tie alone (on an affine model FMN lands that close to the boundary). A point that
fails the check is moved a factor 1 + γ_T further along its direction (FMN's own last relative
step, which puts it clear of the boundary by far more than rounding) and checked alone in turn; a
sample whose point fails both checks has no distance (``budget_exhausted``). Each check is one
forward pass in ``queries``.

Every sample runs all ``steps`` steps (the ε schedule has no stopping rule), so the samples of a
batch finish together and a pool of rows (pool.py) would refill nothing: FMN runs in plain
batches of ``batch_size``. A sample whose logits or gradient turn NaN or infinite stops moving
and keeps the best adversarial point found before, if any; it fails as ``nonfinite_logits``
otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.estimators import FastMinimumNormConfig
from ..config.rules import check_values
from .base import DistanceResult, Estimator, Passes, failed, failure_codes, frozen, l2_norm, nonfinite_rows
from .verdicts import adversarial_alone, reduced_precision, shorten_onto_boundary


class FastMinimumNorm(Estimator):
    """FMN-L2 with the reference's defaults (α₀ = 1, α_T = α₀/100, γ₀ = 0.05, γ_T = 0.001), then a
    bisection onto the boundary. ``batch_size`` is how many samples step together."""

    name = "fmn"

    schema = FastMinimumNormConfig   # the parameters' defaults and ranges

    def __init__(self, steps: int = FastMinimumNormConfig.steps, alpha_init: float = FastMinimumNormConfig.alpha_init,
                 alpha_final: float | None = FastMinimumNormConfig.alpha_final,
                 gamma_init: float = FastMinimumNormConfig.gamma_init,
                 gamma_final: float = FastMinimumNormConfig.gamma_final,
                 refine_steps: int = FastMinimumNormConfig.refine_steps):
        check_values(FastMinimumNormConfig, self.name, steps=steps, alpha_init=alpha_init, alpha_final=alpha_final,
                     gamma_init=gamma_init, gamma_final=gamma_final, refine_steps=refine_steps)
        alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
        self.steps, self.alpha_init, self.alpha_final = steps, alpha_init, alpha_final
        self.gamma_init, self.gamma_final, self.refine_steps = gamma_init, gamma_final, refine_steps

    def passes(self, result: DistanceResult, classes: int) -> Passes:
        """Per step (every sample runs them all) a forward pass that keeps its graph and a backward pass;
        the rest, where a point was found, are forward passes without a graph: the bisection's and the
        checks alone."""
        steps = torch.full_like(result.queries, self.steps)
        return Passes(forward=result.queries - 2 * steps, graphed=steps, backward=steps)

    def schedule(self, step: int) -> tuple[float, float]:
        """(α, γ) at ``step``: cosine annealing from (α₀, γ₀) at step 0 towards (α_T, γ_T)."""
        cosine = (1 + math.cos(math.pi * step / self.steps)) / 2
        return (self.alpha_final + (self.alpha_init - self.alpha_final) * cosine,
                self.gamma_final + (self.gamma_init - self.gamma_final) * cosine)

    def batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> DistanceResult:
        with frozen(model):
            return self._attack(model, x.detach(), y)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DistanceResult:
        n = len(x)
        distance, _, queries = failed(n, x.device)
        per_row = [-1] + [1] * (x.dim() - 1)
        delta = torch.zeros_like(x)
        best = torch.zeros_like(x)                               # the smallest adversarial perturbation so far
        epsilon = torch.full((n,), math.inf, device=x.device)   # the ball's radius
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        bad = torch.zeros_like(found)
        for step in range(self.steps):
            alpha, gamma = self.schedule(step)
            d = delta.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(x + d)
                own = logits.gather(1, y[:, None])[:, 0]
                other = logits.scatter(1, y[:, None], -math.inf).amax(1)
                margin = own - other                             # < 0: adversarial
                grad, = torch.autograd.grad(margin.sum(), d)
            logits, margin = logits.detach().float(), margin.detach().float()
            grad_norm = l2_norm(grad.float())
            bad = bad | nonfinite_rows(logits) | ~torch.isfinite(margin) | ~torch.isfinite(grad_norm)
            is_adv = (margin < 0) & ~bad   # strictly: a tie is no adversarial point
            norm = l2_norm(delta)
            better = is_adv & (norm < distance)
            distance = torch.where(better, norm, distance)
            best = torch.where(better.view(per_row), delta, best)
            found = found | is_adv
            to_boundary = margin.abs() / grad_norm.clamp_min(1e-12)
            grown = epsilon * (1 + gamma)
            first = norm + (1 + gamma) * to_boundary   # before the first adversarial point: past the linearised boundary
            epsilon = torch.where(is_adv, torch.minimum(epsilon * (1 - gamma), distance),
                                  torch.where(found | (grown > first) & torch.isfinite(grown), grown, first))
            # a step of α along the normalised gradient, into the ball, then into the box (in place: fewer
            # passes over the images)
            moved = delta - grad.mul_((alpha / grad_norm.clamp_min(1e-12)).view(per_row))
            moved.mul_((epsilon / l2_norm(moved).clamp_min(1e-12)).clamp(max=1).view(per_row))
            moved.add_(x).clamp_(0, 1).sub_(x)
            delta = torch.where(bad.view(per_row), delta, moved)
            queries += 2   # every row runs the step's passes, a bad one too (it no longer moves)
        rows = torch.isfinite(distance).nonzero()[:, 0]
        scale = shorten_onto_boundary(model, x, best, y, rows, self.refine_steps, distance, queries)
        kept = torch.isfinite(scale)   # after a search in bf16, no multiple of some rows' points may fool the model
        rows, scale = rows[kept], scale[kept]
        point = x[rows] + scale.view(per_row) * best[rows]
        held = adversarial_alone(model, point.clamp(0, 1) if reduced_precision(x.device) else point, y[rows], queries,
                                 rows)
        again, scale = rows[~held], scale[~held] * (1 + self.gamma_final)   # a last step of γ_T further out
        point = (x[again] + scale.view(per_row) * best[again]).clamp(0, 1)
        held = adversarial_alone(model, point, y[again], queries, again)
        distance[again] = torch.where(held, l2_norm(point - x[again]), math.inf)
        success = torch.isfinite(distance)
        return DistanceResult(distance=distance, success=success, queries=queries,
                              failure=failure_codes(success, bad), bound=self.bound)

