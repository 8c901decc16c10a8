"""Carlini–Wagner L2 (2017), batched, with the paper's budget.

Minimises ‖x' − x‖² + c · max(Z_y(x') − max_{i≠y} Z_i(x'), −κ) with Adam over w, where
x' = (tanh(w) + 1) / 2 keeps every iterate inside the [0,1] box. A binary search per sample
finds the smallest constant c that still yields an adversarial point; the smallest successful
perturbation seen over all searches is kept.

Beyond foolbox: each sample stops its Adam run on its own once its loss stalls (foolbox checks
the loss of the whole batch) and leaves the working batch; each binary-search step starts from
the best adversarial point found so far (``warm_start``) instead of from the clean image; and
the kept point is finally moved back along its own direction onto the boundary by bisection
(``refine_steps`` forward passes). Each change can only shorten the reported perturbation.
With ``cuda_graphs`` on a GPU, each Adam step replays from a CUDA graph (graphs.py).

A sample whose logits or loss turn NaN or infinite leaves the attack for good: it keeps the best
adversarial point found before, if any (a valid result), and fails as ``nonfinite_logits``
otherwise. Its NaN gradient stays in its own rows of the Adam state, so in a model that treats
samples independently (as eval-mode models do) the others run as if it had never been there.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import torch
from torch import nn

from .base import DistanceResult, Estimator, failed, failure_codes, frozen, l2_norm, nonfinite_rows
from .graphs import GraphedSteps, StepCache

TANH_SCALE = 0.999999  # keeps arctanh finite at the box's edges, as in foolbox
ABORT_FACTOR = 0.9999  # a run stops when ten steps shrank its loss by less than this factor
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8   # Adam's
STEP_INPUTS = ("delta", "m", "v", "w0", "y", "const", "start", "x0", "best", "distance", "found", "bad")
STEP_OUTPUTS = ("delta", "m", "v", "best", "distance", "found", "bad")


class CarliniWagner(Estimator):
    """CW-L2: binary search over c, Adam on the tanh change of variables, per-sample early abort."""

    name = "cw"

    def __init__(self, binary_search_steps: int = 5, steps: int = 100, initial_const: float = 0.01,
                 confidence: float = 0.0, learning_rate: float = 5e-3, abort_early: bool = True,
                 warm_start: bool = True, refine_steps: int = 10, cuda_graphs: bool = False):
        if binary_search_steps < 1 or steps < 1 or initial_const <= 0 or learning_rate <= 0:
            raise ValueError("cw needs binary_search_steps ≥ 1, steps ≥ 1, initial_const > 0 and learning_rate > 0")
        self.binary_search_steps, self.steps, self.initial_const = binary_search_steps, steps, initial_const
        self.confidence, self.learning_rate, self.abort_early = confidence, learning_rate, abort_early
        self.warm_start, self.refine_steps, self.cuda_graphs = warm_start, refine_steps, cuda_graphs
        self.step_cache = StepCache(self._build_steps)

    @property
    def query_budget(self) -> int:
        """Passes per sample when no run stops early: a forward and a backward pass per Adam step, then the
        refinement's forward passes."""
        return 2 * self.binary_search_steps * self.steps + self.refine_steps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index=None) -> DistanceResult:
        with frozen(model):
            return self._attack(model, x, y)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DistanceResult:
        n = len(x)
        distance, _, queries = failed(n, x.device)
        nonfinite = torch.zeros(n, dtype=torch.bool, device=x.device)
        x0 = x.detach()
        w0 = torch.atanh((x0 * 2 - 1) * TANH_SCALE)
        start = (torch.tanh(w0) + 1) / 2        # x0 as the tanh map reproduces it
        const = torch.full((n,), self.initial_const, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), math.inf, device=x.device)
        best_delta = torch.zeros_like(w0)
        for _ in range(self.binary_search_steps):
            initial = best_delta if self.warm_start else torch.zeros_like(w0)   # _adam_run works on a copy
            found = self._adam_run(model, x0, w0, start, y, const, initial, distance, best_delta, queries, nonfinite)
            upper = torch.where(found, const, upper)
            lower = torch.where(found, lower, const)
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        success = torch.isfinite(distance)
        if self.refine_steps:
            adversarial = (torch.tanh(w0 + best_delta) + 1) / 2
            self._shrink(model, x0, adversarial, y, distance, success, queries)
        return DistanceResult(distance=distance, success=success, queries=queries,
                              failure=failure_codes(success, nonfinite), bound=self.bound)

    def _adam_run(self, model, x0, w0, start, y, const, delta, distance, best_delta, queries,
                  nonfinite) -> torch.Tensor:
        """Adam from ``delta`` (read, never written) at fixed constants; returns which samples turned adversarial.

        The best distance and perturbation and the queries per sample are updated in place. Samples that stall
        leave the working set (its tensors are gathered anew only then, every tenth of the run), and
        so do samples that met non-finite logits or loss: these stop counting as adversarial at once,
        are marked in ``nonfinite`` and take no part in later runs. (Their rows run on until the
        next check, which keeps the loop free of host synchronisations in between.)
        """
        n = len(x0)
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)
        rows = (~nonfinite).nonzero()[:, 0]
        work = {"x0": x0, "w0": w0, "start": start, "y": y, "const": const, "delta": delta, "distance": distance,
                "best": best_delta}
        work = {key: value[rows] for key, value in work.items()}   # copies: the arguments stay as they are
        work.update(m=torch.zeros_like(work["w0"]), v=torch.zeros_like(work["w0"]), found=found[rows],
                    bad=torch.zeros_like(found[rows]), previous=torch.full((len(rows),), math.inf, device=x0.device))
        check_every = math.ceil(self.steps / 10)
        t = torch.arange(1, self.steps + 1, dtype=torch.float64)
        bias = torch.stack([1 - BETA1 ** t, 1 - BETA2 ** t], 1).to(x0.device, torch.float32)   # Adam's corrections
        adam_step, graphs = self.step_cache(model)

        def retire(keep: torch.Tensor | None, steps: int) -> None:
            """Write the rows leaving the working set, after ``steps`` Adam steps, back to the per-sample results."""
            leaving = rows if keep is None else rows[~keep]
            mask = slice(None) if keep is None else ~keep
            distance[leaving] = work["distance"][mask]
            best_delta[leaving] = work["best"][mask]
            found[leaving] = work["found"][mask]
            nonfinite[leaving] = work["bad"][mask]
            queries[leaving] += 2 * steps   # one forward and one backward pass per Adam step

        for step in range(self.steps):
            if len(rows) == 0:
                break
            *updated, loss = graphs(adam_step, tuple(work[key] for key in STEP_INPUTS), (bias[step],))
            work.update(zip(STEP_OUTPUTS, updated))
            if step % check_every == 0:
                keep = ~work["bad"]
                if self.abort_early:
                    keep &= loss <= ABORT_FACTOR * work["previous"]
                    work["previous"] = loss
                if not keep.all():
                    retire(keep, step + 1)
                    work = {key: value[keep] for key, value in work.items()}
                    rows = rows[keep]
        if len(rows):   # the loop ran to its end: only an empty working set breaks it
            retire(None, self.steps)
        return found

    def _adam_step(self, model: nn.Module, delta, m, v, w0, y, const, start, x0, best, distance, found, bad,
                   bias) -> tuple[torch.Tensor, ...]:
        """One Adam step of every working row, as new tensors (``STEP_OUTPUTS`` and the loss): pure and free
        of host synchronisation, so that a CUDA graph can replay it. ``bias`` holds Adam's two bias
        corrections for this step."""
        d = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            adv = (torch.tanh(w0 + d) + 1) / 2
            logits = model(adv)
            own = logits.gather(1, y[:, None])[:, 0]
            other = logits.scatter(1, y[:, None], -math.inf).amax(1)
            loss = (own - other + self.confidence).clamp_min(0) * const + (adv - start).flatten(1).pow(2).sum(1)
            grad, = torch.autograd.grad(loss.sum(), d)
        d, adv, loss, logits = d.detach(), adv.detach(), loss.detach(), logits.detach()
        bad = bad | nonfinite_rows(logits) | ~torch.isfinite(loss)
        is_adv = (logits.argmax(1) != y) & ~bad
        norms = l2_norm(adv - x0)
        better = is_adv & (norms < distance)
        m = BETA1 * m + (1 - BETA1) * grad
        v = BETA2 * v + (1 - BETA2) * grad * grad
        return (d - self.learning_rate * (m / bias[0]) / ((v / bias[1]).sqrt() + EPS), m, v,
                torch.where(better.view(-1, *[1] * (d.dim() - 1)), d, best), torch.where(better, norms, distance),
                found | is_adv, bad, loss)

    def _build_steps(self, model: nn.Module) -> "AdamSteps":
        return AdamSteps(functools.partial(self._adam_step, model), GraphedSteps(self.cuda_graphs, self.name))

    @torch.no_grad()
    def _shrink(self, model, x0, adversarial, y, distance, success, queries) -> None:
        """Bisect along each kept perturbation for the smallest multiple that still fools the model.

        Adam stops a little beyond the boundary; this moves the kept point back onto it along its
        own direction, so the distance can only shrink (``refine_steps`` forward passes). Non-finite
        logits count as not fooled there: the kept, already valid, multiple stays.
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
            logits = model(x0 + mid.view(shape) * perturbation)
            fooled = (logits.argmax(1) != label) & ~nonfinite_rows(logits)   # NaN: keep the valid ``high``
            high, low = torch.where(fooled, mid, high), torch.where(fooled, low, mid)
        queries[found] += self.refine_steps
        distance[found] = torch.minimum(distance[found], l2_norm(high.view(shape) * perturbation))


class AdamSteps(NamedTuple):
    """CW's Adam step over one model and the graphs that replay it (graphs.py). The step reads the
    attack's constants (κ, learning rate) when captured: they are fixed at construction."""

    step: Callable[..., tuple[torch.Tensor, ...]]
    graphs: GraphedSteps
