"""Carlini–Wagner L2 (2017), batched, with a budget that converges (the paper's is a preset).

Minimises ‖x' − x‖² + c · max(Z_y(x') − max_{i≠y} Z_i(x'), −κ) with Adam over w, where
x' = (tanh(w) + 1) / 2 keeps every iterate inside the [0,1] box. A search per sample finds the
smallest constant c that still yields an adversarial point: c grows tenfold from ``initial_const``
until a run first succeeds, then bisects; the smallest successful perturbation seen over all runs
is kept.

Why the default budget is not the paper's (5 runs of 100 Adam steps, c from 0.01, learning
rate 5e-3 per input value; ``PAPER_BUDGET``, conf/estimator/cw_paper.yaml): on the default run's
logistic regression it gave up on 193 of 348 digits and its successes sat at 1.25× the exact
distance. Two things held it back. Escalating c from 0.01 spent most of its five runs before the
first success, leaving little to bisect; and a pixel at 0 or 1 sits where tanh is flat (w near
±7), so moving it takes hundreds of steps at 5e-3. The default allows 10 runs of up to 300 steps
(runs stop early when their loss stalls, so only hard samples spend them) at a rate set per input
dimension (``per_dimension``: a step of about the same L2 length at every image size, 0.05 per
value on 8×8 digits, 0.0072 on 3×32×32 faces). Measurements: docs/benchmarks.md, "A CW that
converges by default".

Beyond foolbox: each sample stops its Adam run on its own once its loss stalls (foolbox checks
the loss of the whole batch) and goes on to its next binary-search step at once; each
binary-search step starts from the best adversarial point found so far (``warm_start``) instead
of from the clean image; and the kept point is finally moved back along its own direction onto
the boundary by bisection (``refine_steps`` forward passes). Each change can only shorten the
reported perturbation. Samples run in a pool of working rows (pool.py), each row at its own
step of its own search, and a finished sample's row goes to the next queued one: every Adam step
runs on a full batch until the queue drains. With ``cuda_graphs`` on a GPU, each Adam step
replays from one CUDA graph (graphs.py).

A sample whose logits or loss turn NaN or infinite leaves the attack for good: it keeps the best
adversarial point found before, if any (a valid result), and fails as ``nonfinite_logits``
otherwise. Its NaN gradient stays in its own rows of the Adam state, so in a model that treats
samples independently (as eval-mode models do) the others run as if it had never been there.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Iterable, Iterator, NamedTuple

import torch
from torch import nn

from ..config.estimators import CarliniWagnerConfig
from ..config.rules import check_values
from .base import DistanceResult, Passes, Pooled, failed, l2_norm, nonfinite_rows
from .graphs import GraphedSteps, StepCache
from .pool import Chunk, Pool, Progress, Rows
from .verdicts import reduced_precision, shorten_onto_boundary

TANH_SCALE = 0.999999  # keeps arctanh finite at the box's edges, as in foolbox
ABORT_FACTOR = 0.9999  # a run stops when ten steps shrank its loss by less than this factor
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8   # Adam's
# The paper's budget (Nanda et al. 2021), conf/estimator/cw_paper.yaml: CarliniWagner(**PAPER_BUDGET)
PAPER_BUDGET = {"binary_search_steps": 5, "steps": 100, "initial_const": 0.01, "learning_rate": 5e-3,
                "per_dimension": False}
# A row's state, which each Adam step renews, and what stays fixed over its search
STATE = ("delta", "m", "v", "t", "const", "lower", "upper", "best", "distance", "found", "bad", "previous", "search",
         "spent")
STEP_INPUTS = (*STATE, "w0", "start", "x0", "y")


class CarliniWagner(Pooled):
    """CW-L2: binary search over c, Adam on the tanh change of variables, per-sample early abort.

    ``batch_size`` is the pool's width: how many samples step together.
    """

    name = "cw"

    schema = CarliniWagnerConfig   # the parameters' defaults and ranges

    def __init__(self, binary_search_steps: int = CarliniWagnerConfig.binary_search_steps,
                 steps: int = CarliniWagnerConfig.steps, initial_const: float = CarliniWagnerConfig.initial_const,
                 confidence: float = CarliniWagnerConfig.confidence,
                 learning_rate: float = CarliniWagnerConfig.learning_rate,
                 abort_early: bool = CarliniWagnerConfig.abort_early, warm_start: bool = CarliniWagnerConfig.warm_start,
                 refine_steps: int = CarliniWagnerConfig.refine_steps, cuda_graphs: bool = CarliniWagnerConfig.cuda_graphs,
                 per_dimension: bool = CarliniWagnerConfig.per_dimension):
        check_values(CarliniWagnerConfig, self.name, binary_search_steps=binary_search_steps, steps=steps,
                     initial_const=initial_const, confidence=confidence, learning_rate=learning_rate,
                     abort_early=abort_early, warm_start=warm_start, refine_steps=refine_steps,
                     cuda_graphs=cuda_graphs, per_dimension=per_dimension)
        self.binary_search_steps, self.steps, self.initial_const = binary_search_steps, steps, initial_const
        self.confidence, self.learning_rate, self.abort_early = confidence, learning_rate, abort_early
        self.warm_start, self.refine_steps, self.cuda_graphs = warm_start, refine_steps, cuda_graphs
        self.per_dimension = per_dimension
        self.step_cache = StepCache(self._build_steps)

    @property
    def query_budget(self) -> int:
        """Passes per sample when no run stops early: a forward and a backward pass per Adam step, then the
        refinement's forward passes."""
        return 2 * self.binary_search_steps * self.steps + self.refine_steps

    def passes(self, result: DistanceResult, classes: int) -> Passes:
        """Per Adam step a forward pass that keeps its graph and a backward pass; the refinement's forward
        passes, without a graph, where a point was found. Under bf16 the refinement's first checks (up to
        nine: verdicts.FURTHER) are counted as Adam steps, half a step each: a floor off by those few passes."""
        refined = self.refine_steps * result.success.long()
        adam_steps = (result.queries - refined) // 2
        return Passes(forward=refined, graphed=adam_steps, backward=adam_steps)

    def rate(self, dimensions: int) -> float:
        """Adam's learning rate on inputs of ``dimensions`` values: ``learning_rate``, or with ``per_dimension``
        ``learning_rate / √dimensions``, the rate at which a step's L2 length (about the rate times √dimensions,
        Adam moving every coordinate by about the rate) is ``learning_rate`` whatever the image size."""
        return self.learning_rate / math.sqrt(dimensions) if self.per_dimension else self.learning_rate

    @property
    def check_every(self) -> int:
        """Adam steps between a row's checks for a stall or non-finite values: ten checks per run."""
        return math.ceil(self.steps / 10)

    def _attack(self, model: nn.Module, chunks: Iterable[Chunk], width: int,
                progress: Progress | None) -> Iterator[tuple[int, DistanceResult]]:
        """Every sample's binary search in a pool of ``width`` rows (pool.py), then, once a chunk's searches
        have all ended, the refinement of the adversarial points found in it, ``width`` at a time."""
        adam_step, graphs = self.step_cache(model)
        corrections: torch.Tensor | None = None   # Adam's two bias corrections per step, on the inputs' device

        def admit(x0: torch.Tensor, y: torch.Tensor) -> Rows:
            """Rows at the start of the samples' first run: Adam from the clean input at the initial constant."""
            x0 = x0.detach()
            w0 = torch.atanh((x0 * 2 - 1) * TANH_SCALE)
            zero, rows = torch.zeros_like(w0), len(x0)

            def full(value, dtype=torch.float32):
                return torch.full((rows,), value, dtype=dtype, device=x0.device)

            return {"x0": x0, "w0": w0, "start": (torch.tanh(w0) + 1) / 2, "y": y,   # x0 as tanh reproduces it
                    "delta": zero, "m": zero, "v": zero, "t": full(0, torch.long), "const": full(self.initial_const),
                    "lower": full(0.0), "upper": full(math.inf), "best": zero, "distance": full(math.inf),
                    "found": full(False, torch.bool), "bad": full(False, torch.bool), "previous": full(math.inf),
                    "search": full(0, torch.long), "spent": full(0, torch.long)}

        def blank(x: torch.Tensor, _: torch.Tensor) -> Rows:
            distance, _, queries = failed(len(x), x.device)
            return {"distance": distance, "queries": queries, "nonfinite": torch.zeros_like(distance, dtype=torch.bool),
                    "adversarial": torch.empty_like(x)}   # each sample's best point, once its search has ended

        def retire(rows: Rows) -> None:
            """Record the results of the rows whose search ended, and their best points for the refinement."""
            if rows:
                pool.record(rows["sample"], distance=rows["distance"], nonfinite=rows["bad"], queries=rows["spent"],
                            adversarial=(torch.tanh(rows["w0"] + rows["best"]) + 1) / 2)

        def results() -> Iterator[tuple[int, DistanceResult]]:
            for chunk in pool.done():
                measured = chunk.results
                distance, queries = measured["distance"], measured["queries"]
                if self.refine_steps or reduced_precision(chunk.x.device):   # bf16's points are checked in fp32
                    found, perturbation = torch.isfinite(distance).nonzero()[:, 0], measured["adversarial"] - chunk.x
                    for start in range(0, len(found), width):
                        shorten_onto_boundary(model, chunk.x, perturbation, chunk.y, found[start:start + width],
                                              self.refine_steps, distance, queries)
                yield chunk.number, self.searched(distance, queries, measured["nonfinite"])

        pool = Pool(width, chunks, admit, blank, progress)
        while True:
            pool.fill()
            yield from results()
            if not len(pool):
                return
            if corrections is None:
                t = torch.arange(1, self.steps + 1, dtype=torch.float64)
                corrections = torch.stack([1 - BETA1 ** t, 1 - BETA2 ** t], 1).to(pool.rows["x0"].device, torch.float32)
            *state, leave = graphs(adam_step, tuple(pool.rows[key] for key in STEP_INPUTS), (corrections,), width=width)
            pool.update(**dict(zip(STATE, state)))
            retire(pool.leave(leave))

    def _adam_step(self, model: nn.Module, delta, m, v, t, const, lower, upper, best, distance, found, bad, previous,
                   search, spent, w0, start, x0, y, corrections) -> tuple[torch.Tensor, ...]:
        """One Adam step of every row and what follows from it, as new tensors (``STATE`` and which rows
        leave): pure and free of host synchronisation, so that a CUDA graph can replay it.

        Each row is at step ``t`` of its run, at constant ``const`` (``corrections[t]`` holds Adam's two
        bias corrections there). A run ends at its last step, or at a check (every ``check_every``
        steps from the first) when its loss stalled or turned non-finite; then the binary search moves
        the row's constant between ``lower`` and ``upper`` and the next run starts, from the best point
        so far with ``warm_start``. A row leaves after its last run, or at once where it met non-finite
        logits or loss: it keeps its best point from before, if any. Until its next check such a row
        runs on, as every row does: the check needs no host synchronisation then.
        """
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
        per_row = [-1] + [1] * (d.dim() - 1)
        best, distance = torch.where(better.view(per_row), d, best), torch.where(better, norms, distance)
        found = found | is_adv
        m = BETA1 * m + (1 - BETA1) * grad
        v = BETA2 * v + (1 - BETA2) * grad * grad
        bias = corrections[t]
        delta = d - self.rate(d[0].numel()) * (m / bias[:, 0].view(per_row)) / ((v / bias[:, 1].view(per_row)).sqrt() + EPS)
        # the run's checks: a stall (its loss fell by less than ABORT_FACTOR since the last check) or a non-finite value
        checked = t % self.check_every == 0
        stalled = ~(loss <= ABORT_FACTOR * previous) if self.abort_early else torch.zeros_like(checked)
        previous = torch.where(checked, loss, previous)
        ended = (checked & (bad | stalled)) | (t + 1 == self.steps)
        # the binary search over c: the smallest constant known to succeed, the largest known to fail
        upper = torch.where(ended & found, const, upper)
        lower = torch.where(ended & ~found, const, lower)
        const = torch.where(ended, torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2), const)
        search = search + ended.long()
        leave = ended & (bad | (search == self.binary_search_steps))
        restart = ended.view(per_row)
        delta = torch.where(restart, best if self.warm_start else torch.zeros_like(d), delta)
        m, v = torch.where(restart, 0.0, m), torch.where(restart, 0.0, v)
        t = torch.where(ended, 0, t + 1)
        found, previous = found & ~ended, torch.where(ended, math.inf, previous)
        return (delta, m, v, t, const, lower, upper, best, distance, found, bad, previous, search, spent + 2, leave)

    def _build_steps(self, model: nn.Module) -> "AdamSteps":
        return AdamSteps(functools.partial(self._adam_step, model), GraphedSteps(self.cuda_graphs, self.name))


class AdamSteps(NamedTuple):
    """CW's Adam step over one model and the graphs that replay it (graphs.py). The step reads the
    attack's constants (κ, learning rate) when captured: they are fixed at construction."""

    step: Callable[..., tuple[torch.Tensor, ...]]
    graphs: GraphedSteps
