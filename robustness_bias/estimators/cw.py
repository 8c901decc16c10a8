"""Carlini–Wagner L2 (2017), batched, with the paper's budget (SPEC §2).

Minimises ‖x' − x‖² + c · max(Z_y(x') − max_{i≠y} Z_i(x'), −κ) with Adam over w, where
x' = (tanh(w) + 1) / 2 keeps every iterate inside the [0,1] box. A binary search per sample
finds the smallest constant c that still yields an adversarial point; the smallest successful
perturbation seen over all searches is kept.

Beyond foolbox: each sample stops its Adam run on its own once its loss stalls (foolbox checks
the loss of the whole batch) and leaves the working batch; each binary-search step starts from
the best adversarial point found so far (``warm_start``) instead of from the clean image; and
the kept point is finally moved back along its own direction onto the boundary by bisection
(``refine_steps`` forward passes). Each change can only shorten the reported perturbation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import DistanceResult, Estimator, failed, frozen, l2_norm

TANH_SCALE = 0.999999  # keeps arctanh finite at the box's edges, as in foolbox


class CarliniWagner(Estimator):
    """CW-L2: binary search over c, Adam on the tanh change of variables, per-sample early abort."""

    name = "cw"

    def __init__(self, binary_search_steps: int = 5, steps: int = 100, initial_const: float = 0.01,
                 confidence: float = 0.0, learning_rate: float = 5e-3, abort_early: bool = True,
                 warm_start: bool = True, refine_steps: int = 10, batch_size: int = 256,
                 every_nth: int | None = None):
        if binary_search_steps < 1 or steps < 1 or initial_const <= 0 or learning_rate <= 0:
            raise ValueError("cw needs binary_search_steps ≥ 1, steps ≥ 1, initial_const > 0 and learning_rate > 0")
        self.binary_search_steps, self.steps, self.initial_const = binary_search_steps, steps, initial_const
        self.confidence, self.learning_rate, self.abort_early = confidence, learning_rate, abort_early
        self.warm_start, self.refine_steps = warm_start, refine_steps
        self.batch_size, self.every_nth = batch_size, every_nth

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index=None) -> DistanceResult:
        with frozen(model):
            return self._attack(model, x, y)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DistanceResult:
        n = len(x)
        distance, success, queries = failed(n, x.device)
        x0 = x.detach()
        w0 = torch.atanh((x0 * 2 - 1) * TANH_SCALE)
        start = (torch.tanh(w0) + 1) / 2        # x0 as the tanh map reproduces it
        const = torch.full((n,), self.initial_const, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), math.inf, device=x.device)
        best_delta = torch.zeros_like(w0)
        for _ in range(self.binary_search_steps):
            initial = best_delta.clone() if self.warm_start else torch.zeros_like(w0)
            found = self._adam_run(model, x0, w0, start, y, const, initial, distance, success, queries, best_delta)
            upper = torch.where(found, const, upper)
            lower = torch.where(found, lower, const)
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        if self.refine_steps:
            adversarial = (torch.tanh(w0 + best_delta) + 1) / 2
            self._shrink(model, x0, adversarial, y, distance, success, queries)
        return DistanceResult(distance=distance, success=success, queries=queries)

    @torch.no_grad()
    def _shrink(self, model, x0, adversarial, y, distance, success, queries) -> None:
        """Bisect along each kept perturbation for the smallest multiple that still fools the model.

        Adam stops a little beyond the boundary; this moves the kept point back onto it along its
        own direction, so the distance can only shrink (``refine_steps`` forward passes).
        """
        found = success.nonzero()[:, 0]
        if len(found) == 0:
            return
        x0, perturbation, label = x0[found], adversarial[found] - x0[found], y[found]
        low = torch.zeros(len(found), device=x0.device)
        high = torch.ones(len(found), device=x0.device)
        shape = [-1] + [1] * (x0.dim() - 1)
        for _ in range(self.refine_steps):
            mid = (low + high) / 2
            fooled = model(x0 + mid.view(shape) * perturbation).argmax(1) != label
            high, low = torch.where(fooled, mid, high), torch.where(fooled, low, mid)
        queries[found] += self.refine_steps
        distance[found] = torch.minimum(distance[found], l2_norm(high.view(shape) * perturbation))

    def _adam_run(self, model, x0, w0, start, y, const, delta, distance, success, queries, best_delta) -> torch.Tensor:
        """One Adam optimisation from ``delta`` at fixed constants; updates the best results in place."""
        n = len(x0)
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)
        active = torch.arange(n, device=x0.device)
        m, v = torch.zeros_like(w0), torch.zeros_like(w0)
        previous = torch.full((n,), math.inf, device=x0.device)
        check_every = math.ceil(self.steps / 10)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for step in range(self.steps):
            d = delta[active].requires_grad_(True)
            with torch.enable_grad():
                adv = (torch.tanh(w0[active] + d) + 1) / 2
                logits = model(adv)
                label = y[active]
                own = logits.gather(1, label[:, None])[:, 0]
                other = logits.scatter(1, label[:, None], -math.inf).amax(1)
                hinge = (own - other + self.confidence).clamp_min(0) * const[active]
                squared = (adv - start[active]).flatten(1).pow(2).sum(1)
                loss = hinge + squared
                grad, = torch.autograd.grad(loss.sum(), d)
            queries[active] += 2
            adv, loss = adv.detach(), loss.detach()
            is_adv = logits.detach().argmax(1) != label
            found[active] |= is_adv
            norms = l2_norm(adv - x0[active])
            better = is_adv & (norms < distance[active])   # index updates below avoid a device sync
            distance[active] = torch.where(better, norms, distance[active])
            success[active] |= better
            best_delta[active] = torch.where(better.view(-1, *[1] * (d.dim() - 1)), d.detach(), best_delta[active])

            t = step + 1
            m[active] = beta1 * m[active] + (1 - beta1) * grad
            v[active] = beta2 * v[active] + (1 - beta2) * grad * grad
            m_hat = m[active] / (1 - beta1 ** t)
            v_hat = v[active] / (1 - beta2 ** t)
            delta[active] = d.detach() - self.learning_rate * m_hat / (v_hat.sqrt() + eps)

            if self.abort_early and step % check_every == 0:
                stalled = ~(loss <= 0.9999 * previous[active])
                previous[active] = loss
                active = active[~stalled]
                if len(active) == 0:
                    break
        return found
