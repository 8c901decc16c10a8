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

Samples run in a pool of working rows (pool.py), each at its own step of its own schedule. With
``patience`` a sample leaves once its smallest adversarial norm has not fallen below STALL_FACTOR ×
its last mark for that many steps, and the next queued sample takes its row. The reference runs
every sample for all ``steps``, as ``patience=0`` (the default) does. The bisection and the check
alone decide the reported distance, so a stopped sample's distance is still an upper bound, only
less tight: by how much depends on the model (docs/benchmarks.md, "FMN in the pool"). A sample whose
logits or gradient turn NaN or infinite leaves at once and keeps the best adversarial point found
before, if any; it fails as ``nonfinite_logits`` otherwise.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import torch
from torch import nn

from ..config.estimators import FastMinimumNormConfig
from ..config.rules import check_values
from .base import DistanceResult, Passes, Pooled, failed, l2_norm, nonfinite_rows
from .pool import Chunk, Pool, Progress, Rows
from .verdicts import adversarial_alone, reduced_precision, shorten_onto_boundary


class FastMinimumNorm(Pooled):
    """FMN-L2 with the reference's defaults (α₀ = 1, α_T = α₀/100, γ₀ = 0.05, γ_T = 0.001), a per-sample
    stopping rule (``patience``), then a bisection onto the boundary. ``batch_size`` is the pool's width: how
    many samples step together."""

    name = "fmn"

    schema = FastMinimumNormConfig   # the parameters' defaults and ranges

    def __init__(self, steps: int = FastMinimumNormConfig.steps, alpha_init: float = FastMinimumNormConfig.alpha_init,
                 alpha_final: float | None = FastMinimumNormConfig.alpha_final,
                 gamma_init: float = FastMinimumNormConfig.gamma_init,
                 gamma_final: float = FastMinimumNormConfig.gamma_final,
                 refine_steps: int = FastMinimumNormConfig.refine_steps,
                 patience: int = FastMinimumNormConfig.patience):
        check_values(FastMinimumNormConfig, self.name, steps=steps, alpha_init=alpha_init, alpha_final=alpha_final,
                     gamma_init=gamma_init, gamma_final=gamma_final, refine_steps=refine_steps, patience=patience)
        alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
        self.steps, self.alpha_init, self.alpha_final = steps, alpha_init, alpha_final
        self.gamma_init, self.gamma_final, self.refine_steps = gamma_init, gamma_final, refine_steps
        self.patience = patience

    def passes(self, result: DistanceResult, classes: int) -> Passes:
        """Per step a forward pass that keeps its graph and a backward pass; the rest, where a point was found,
        are forward passes without a graph: the bisection's and the check alone (a second check where the first
        failed, and under bf16 the multiples' checks, are counted as half a step each: a floor off by those few
        passes)."""
        verdicts = (self.refine_steps + 1) * result.success.long()
        steps = (result.queries - verdicts) // 2
        return Passes(forward=result.queries - 2 * steps, graphed=steps, backward=steps)

    def schedule(self, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(α, γ) of each row at its ``step``: cosine annealing from (α₀, γ₀) at step 0 towards (α_T, γ_T)."""
        cosine = (1 + torch.cos(math.pi * step.float() / self.steps)) / 2
        return (self.alpha_final + (self.alpha_init - self.alpha_final) * cosine,
                self.gamma_final + (self.gamma_init - self.gamma_final) * cosine)

    def _attack(self, model: nn.Module, chunks: Iterable[Chunk], width: int,
                progress: Progress | None) -> Iterator[tuple[int, DistanceResult]]:
        """Every sample's steps in a pool of ``width`` rows (pool.py), then, once a chunk's samples have all
        left it, the verdicts on the smallest adversarial perturbations found in it, ``width`` at a time."""

        def admit(x: torch.Tensor, y: torch.Tensor) -> Rows:
            """Rows at the clean inputs, with no adversarial point found and an infinite ball."""
            x, rows = x.detach(), len(x)

            def full(value, dtype=torch.float32):
                return torch.full((rows,), value, dtype=dtype, device=x.device)

            return {"x": x, "y": y, "delta": torch.zeros_like(x), "best": torch.zeros_like(x),
                    "distance": full(math.inf), "epsilon": full(math.inf), "found": full(False, torch.bool),
                    "bad": full(False, torch.bool), "step": full(0, torch.long), "anchor": full(math.inf),
                    "stale": full(0, torch.long), "spent": full(0, torch.long)}

        def blank(x: torch.Tensor, _: torch.Tensor) -> Rows:
            distance, _, queries = failed(len(x), x.device)
            return {"distance": distance, "queries": queries, "nonfinite": torch.zeros_like(distance, dtype=torch.bool),
                    "best": torch.zeros_like(x)}   # each sample's smallest adversarial perturbation, once it left

        def retire(rows: Rows) -> None:
            if rows:
                pool.record(rows["sample"], distance=rows["distance"], nonfinite=rows["bad"], queries=rows["spent"],
                            best=rows["best"])

        def results() -> Iterator[tuple[int, DistanceResult]]:
            for chunk in pool.done():
                measured = chunk.results
                distance, queries = measured["distance"], measured["queries"]
                found = torch.isfinite(distance).nonzero()[:, 0]
                for start in range(0, len(found), width):
                    self._verdicts(model, chunk.x, chunk.y, measured["best"], found[start:start + width], distance,
                                   queries)
                yield chunk.number, self.searched(distance, queries, measured["nonfinite"])

        pool = Pool(width, chunks, admit, blank, progress)
        while True:
            pool.fill()
            yield from results()
            if not len(pool):
                return
            *state, leave = self._step(model, *(pool.rows[key] for key in STEP_INPUTS))
            pool.update(**dict(zip(STATE, state)))
            retire(pool.leave(leave))

    def _step(self, model: nn.Module, delta, best, distance, epsilon, found, bad, step, anchor, stale, spent, x,
              y) -> tuple[torch.Tensor, ...]:
        """One FMN step of every row, each at its own ``step`` of the schedule, as new tensors (``STATE`` and
        which rows leave). A row leaves after its last step, at once where its logits or gradient turned
        non-finite (keeping the best point found before, if any), and, with ``patience``, once its smallest
        adversarial norm has not fallen below ``STALL_FACTOR`` × the last one that did for ``patience`` steps."""
        alpha, gamma = self.schedule(step)
        per_row = [-1] + [1] * (x.dim() - 1)
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
        # a step of α along the normalised gradient, into the ball, then into the box (in place: fewer passes over
        # the images)
        moved = delta - grad.mul_((alpha / grad_norm.clamp_min(1e-12)).view(per_row))
        moved.mul_((epsilon / l2_norm(moved).clamp_min(1e-12)).clamp(max=1).view(per_row))
        moved.add_(x).clamp_(0, 1).sub_(x)
        # the stopping rule: steps since the smallest adversarial norm last fell by more than the stall factor
        shrank = distance < STALL_FACTOR * anchor
        anchor, stale, step = torch.where(shrank, distance, anchor), torch.where(shrank, 0, stale + 1), step + 1
        leave = bad | (step == self.steps)
        if self.patience:
            leave = leave | (found & (stale >= self.patience))
        return moved, best, distance, epsilon, found, bad, step, anchor, stale, spent + 2, leave

    def _verdicts(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, best: torch.Tensor, rows: torch.Tensor,
                  distance: torch.Tensor, queries: torch.Tensor) -> None:
        """The ``rows``' smallest adversarial perturbations ``best`` bisected onto the boundary and checked alone
        (a second time a factor 1 + γ_T further out where the first check fails), into ``distance`` (+inf where
        no check holds) and ``queries``."""
        per_row = [-1] + [1] * (x.dim() - 1)
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


STALL_FACTOR = 0.999   # patience's measure of progress: the smallest adversarial norm below 0.999× its last mark
# A row's state, which each step renews, and what stays fixed
STATE = ("delta", "best", "distance", "epsilon", "found", "bad", "step", "anchor", "stale", "spent")
STEP_INPUTS = (*STATE, "x", "y")
