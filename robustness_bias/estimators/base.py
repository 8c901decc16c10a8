"""What every distance estimator returns, so that audits and reports treat them alike."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import torch
from torch import nn

from ..errors import UserError
from .graphs import StepCache
from .pool import Chunk, Progress


# Which side of the true distance an estimate lies on: attacks find an upper bound, smoothing certifies
# a lower one, and the exact estimator gives the distance itself.
UPPER, LOWER, EXACT = "upper", "lower", "exact"

# Why a sample has no distance; ``FAILURES[code]`` names the code in ``DistanceResult.failure``.
FAILURES = ("none", "budget_exhausted", "nonfinite_logits", "abstained", "wrong_class")
NO_FAILURE, BUDGET_EXHAUSTED, NONFINITE_LOGITS, ABSTAINED, WRONG_CLASS = range(len(FAILURES))


@dataclass
class DistanceResult:
    """Per-sample estimate of the L2 distance, in [0,1] pixel space, to the decision boundary.

    ``bound`` says which bound ``distance`` is (:data:`UPPER`, :data:`LOWER` or :data:`EXACT`), and so what a
    sample without a distance gets: the bound that always holds, ``+inf`` above (an attack that found no
    adversarial point) or 0 below (smoothing certifies nothing where it abstains). ``success`` says
    whether the estimator measured anything; ``failure`` says why not (a code into :data:`FAILURES`;
    ``none`` where ``success`` holds). ``queries`` counts the forward and backward passes per sample.
    """

    distance: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor
    failure: torch.Tensor
    bound: str

    def __post_init__(self):
        n = self.distance.shape[0]
        if self.success.shape != (n,) or self.queries.shape != (n,) or self.failure.shape != (n,):
            raise ValueError("distance, success, queries and failure must be 1-d and of equal length")
        if self.bound not in (UPPER, LOWER, EXACT):
            raise ValueError(f"bound={self.bound!r}: use one of {(UPPER, LOWER, EXACT)}")

    @staticmethod
    def cat(parts: list["DistanceResult"]) -> "DistanceResult":
        """One result from the results of consecutive batches of one estimator, on the CPU."""
        return DistanceResult(
            distance=torch.cat([p.distance.detach().cpu() for p in parts]),
            success=torch.cat([p.success.detach().cpu() for p in parts]),
            queries=torch.cat([p.queries.detach().cpu() for p in parts]),
            failure=torch.cat([p.failure.detach().cpu() for p in parts]),
            bound=parts[0].bound,
        )


class Passes(NamedTuple):
    """The model passes each sample's run took, by kind: forward passes without a graph, forward passes
    that keep one for backward passes (slower: they store activations), and backward passes. Every pass
    run counts, as a benchmark counts a peer's, though a pass that repeats another at the same point
    (DeepFool's graph-keeping pass after its check) is no query."""

    forward: torch.Tensor
    graphed: torch.Tensor
    backward: torch.Tensor


class EstimatorMismatch(UserError, ValueError):
    """The estimator cannot measure this model (e.g. the exact estimator on a non-linear network)."""


class Estimator:
    """A callable ``(model, x, y, index, batch_size) -> DistanceResult`` for correctly classified points ``x`` of
    class ``y``: an algorithm's parameters and nothing of how an audit schedules it (the audit's plan).

    The audit hands an estimator its samples as a stream of chunks (:meth:`stream`), storing each
    chunk's results as the estimator hands them back, and ``batch_size``, how many it may work on at
    once (None: all), which bounds its memory: the audit halves it after running out of GPU memory.
    Estimators that measure a batch at a time implement :meth:`batch`, which the default ``__call__``
    runs on consecutive batches of a chunk; the attacks keep a pool of ``batch_size`` working rows
    full instead, refilled as samples finish, from one chunk into the next (pool.py). ``index``
    holds the samples' dataset indices, for estimators whose randomness is seeded per sample.
    ``check_model`` runs before any training, so a mismatch fails fast with a clear message.
    ``bound`` says which side of the true distance the results lie on. ``batch_invariant`` says that
    results do not depend on ``batch_size``; otherwise (batched kernels round differently for other
    batch sizes: docs/benchmarks.md) the audit reuses stored chunks only from the same batch size.
    ``step_cache`` keeps an attack's step functions and CUDA graphs between calls (graphs.py). ``cap`` is
    the largest distance the estimator can report (smoothing's largest certifiable radius): a distance
    there says only that the true one is at least that large, so summaries count and flag them.
    """

    name = "estimator"
    bound = UPPER
    cap = float("inf")
    batch_invariant = False
    step_cache: StepCache | None = None

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EstimatorMismatch` when this estimator cannot measure ``model``."""

    def release_memory(self) -> None:
        """Forget what is kept between calls for speed (CUDA graphs and their memory pools), as the audit
        does before it retries a chunk in smaller batches after running out of GPU memory."""
        if self.step_cache is not None:
            self.step_cache.clear()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None,
                 batch_size: int | None = None, progress: Progress | None = None) -> DistanceResult:
        index = torch.arange(len(x)) if index is None else torch.as_tensor(index)
        size = batch_size or max(len(x), 1)
        parts = []
        for start in range(0, max(len(x), 1), size):
            parts.append(self.batch(model, x[start:start + size], y[start:start + size], index[start:start + size]))
            if progress is not None:
                progress(len(parts[-1].distance))
        return parts[0] if len(parts) == 1 else DistanceResult.cat(parts)

    def stream(self, model: nn.Module, chunks: Iterable[Chunk], batch_size: int | None,
               progress: Progress | None = None) -> Iterator[tuple[int, DistanceResult]]:
        """(position, result) of each chunk (inputs, labels, dataset indices) of ``chunks`` as it is done, telling
        ``progress`` of the samples measured as they are (an audit's bar moves per batch, not per chunk). Here
        one call per chunk, in order; the attacks carry one pool of working rows across the chunks instead
        (:class:`Pooled`), and hand chunks back as their last samples finish."""
        for number, (x, y, index) in enumerate(chunks):
            yield number, self(model, x, y, index=index, batch_size=batch_size, progress=progress)

    def batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> DistanceResult:
        """The results of one batch, for estimators that measure a batch at a time."""
        raise NotImplementedError

    def passes(self, result: DistanceResult, classes: int) -> Passes:
        """Each sample's passes by kind, on a model with ``classes`` outputs: what a benchmark's arithmetic
        floor counts. Its ``queries``, as forward passes without a graph, unless an estimator says otherwise."""
        none = torch.zeros_like(result.queries)
        return Passes(forward=result.queries, graphed=none, backward=none)


class Pooled(Estimator):
    """An attack whose samples run in a pool of ``batch_size`` working rows across all the chunks it is handed
    (pool.py), with the model's parameters frozen meanwhile; :meth:`_attack` runs the pool. A call is a
    stream of one chunk."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None,
                 batch_size: int | None = None) -> DistanceResult:
        index = torch.arange(len(x)) if index is None else torch.as_tensor(index)
        (_, result), = self.stream(model, [(x, y, index)], batch_size or max(len(x), 1))
        return result

    def stream(self, model: nn.Module, chunks: Iterable[Chunk], batch_size: int,
               progress: Progress | None = None) -> Iterator[tuple[int, DistanceResult]]:
        with frozen(model):
            yield from self._attack(model, chunks, batch_size, progress)

    def _attack(self, model: nn.Module, chunks: Iterable[Chunk], width: int,
                progress: Progress | None) -> Iterator[tuple[int, DistanceResult]]:
        """(position, result) of each chunk as its last sample leaves a pool of ``width`` rows, telling
        ``progress`` of each sample as it leaves."""
        raise NotImplementedError


def failed(n: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh per-sample (distance, success, queries): +inf and false until an estimator succeeds."""
    return (torch.full((n,), float("inf"), device=device), torch.zeros(n, dtype=torch.bool, device=device),
            torch.zeros(n, dtype=torch.long, device=device))


def nonfinite_rows(logits: torch.Tensor) -> torch.Tensor:
    """Which samples' logits hold a NaN or an infinity: their argmax means nothing."""
    return ~torch.isfinite(logits).all(1)


def failure_codes(success: torch.Tensor, nonfinite: torch.Tensor) -> torch.Tensor:
    """Per-sample codes for an attack: none where it succeeded, else nonfinite_logits where it met
    them, else budget_exhausted."""
    codes = torch.where(success, NO_FAILURE, BUDGET_EXHAUSTED)
    return codes.masked_fill(nonfinite & ~success, NONFINITE_LOGITS)


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of a batch."""
    return x.flatten(1).norm(dim=1)


def fooled(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Which rows the model strictly misclassifies: the true class's logit strictly below the best other
    one, with every logit finite. A tie (margin exactly 0) is no adversarial point: ``argmax`` would break
    it by the classes' order, and the same point next to other images (batched kernels round otherwise)
    can fall on either side."""
    own = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    return (own < other) & ~nonfinite_rows(logits)


def reduced_precision(device: torch.device) -> bool:
    """Whether an attack's passes run under autocast (``audit.plan.<estimator>.precision=bf16``): then its search
    runs in bf16, and its verdicts, which points are adversarial and how far they lie, in the model's own
    precision (:func:`full_precision`)."""
    return torch.is_autocast_enabled(device.type)


def full_precision(device: torch.device):
    """The model's own precision inside an audit under autocast, for the passes that decide a result: a reported
    point is adversarial for the model as it is, not only for its bf16 copy, so its distance stays an upper
    bound on the model's own (docs/design.md, "Faster passes")."""
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def adversarial_alone(model: nn.Module, points: torch.Tensor, y: torch.Tensor, queries: torch.Tensor,
                      rows: torch.Tensor) -> torch.Tensor:
    """Whether each point is adversarial (strictly) when the model sees it alone, in a forward pass of its
    own at full precision, which ``queries`` counts at its row of ``rows``."""
    queries[rows] += 1
    with full_precision(points.device):
        return torch.tensor([bool(fooled(model(point[None]), label[None])) for point, label in zip(points, y)],
                            dtype=torch.bool, device=points.device)


# Multiples of a point found under reduced precision, tried in turn at full precision until one is adversarial. The
# search's bf16 logits err by about 2⁻⁸ of their size, so its points can sit that far on the wrong side of the
# boundary, and much further where the boundary lies within that error of a point (a margin of a few bf16 steps).
FURTHER = (1.0, 1.001, 1.003, 1.01, 1.03, 1.1, 1.3, 2.0, 4.0)


@torch.no_grad()
def shorten_onto_boundary(model, x0: torch.Tensor, perturbation: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
                          bisections: int, distance: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Moves the adversarial points ``x0 + perturbation`` of ``rows`` back onto the boundary along their own
    direction: the smallest multiple of each perturbation in (0, 1] that still fools the model (strictly:
    :func:`fooled`), bisected in ``bisections`` forward passes, which the rows' ``queries`` count. Their
    ``distance`` becomes that multiple's length where it is shorter; the multiples are returned, one per
    row of ``rows``.

    An attack stops a little beyond the boundary, so the distance can only shrink. Non-finite logits
    count as not fooled there: the kept, already valid, multiple stays.

    After a search under reduced precision (:func:`reduced_precision`) the points are first checked at
    full precision, and where one does not fool the model the next multiple of :data:`FURTHER` is tried
    (inside the [0,1] box), each check a query; the bisection then runs between the last multiple that
    failed and the first that fooled, and the distance becomes that of the point found: the search's
    own, in bf16, is no bound on the model's. A row that no multiple makes adversarial gets +inf (multiple
    inf): no distance.
    """
    high = torch.ones(len(rows), device=x0.device)
    if len(rows) == 0:
        return high
    reduced = reduced_precision(x0.device)
    x0, perturbation, y = x0[rows], perturbation[rows], y[rows]
    low = torch.zeros(len(x0), device=x0.device)
    shape = [-1] + [1] * (x0.dim() - 1)

    def point(scale: torch.Tensor) -> torch.Tensor:
        moved = x0 + scale.view(shape) * perturbation
        return moved.clamp(0, 1) if reduced else moved   # a multiple beyond 1 can leave the box

    with full_precision(x0.device):
        if reduced:
            low, high, spent = first_adversarial_multiple(model, point, y)
            queries[rows] += spent
        lost = torch.isinf(high)
        high, low = high.masked_fill(lost, 1.0), low.masked_fill(lost, 1.0)   # nothing to bisect there
        for _ in range(bisections):
            mid = (low + high) / 2
            hit = fooled(model(point(mid)), y)
            high, low = torch.where(hit, mid, high), torch.where(hit, low, mid)
    queries[rows] += bisections
    if reduced:
        distance[rows] = torch.where(lost, math.inf, l2_norm(point(high) - x0))
        return high.masked_fill(lost, math.inf)
    distance[rows] = torch.minimum(distance[rows], l2_norm(high.view(shape) * perturbation))
    return high


def first_adversarial_multiple(model, point, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the last multiple of :data:`FURTHER` that did not fool the model (0 before the first), the first
    that did (+inf where none did), and how many forward passes the row took."""
    low = torch.zeros(len(y), device=y.device)
    high = torch.full_like(low, math.inf)
    spent = torch.zeros(len(y), dtype=torch.long, device=y.device)
    for multiple in FURTHER:
        open_ = torch.isinf(high).nonzero()[:, 0]
        if len(open_) == 0:
            break
        scale = torch.full_like(low, multiple)
        hit = fooled(model(point(scale)[open_]), y[open_])
        spent[open_] += 1
        high[open_[hit]] = multiple
        low[open_[~hit]] = multiple
    return low, high, spent


def is_channels_last(x: torch.Tensor) -> bool:
    """An image batch laid out channels-last (NHWC), as a channels-last model wants its inputs."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


@contextmanager
def frozen(model: nn.Module):
    """Parameters stop requiring gradients for the duration, so attacks' backward passes skip them.

    cuDNN's autotuner is off meanwhile: an attack's pool stays at one width while its queue lasts, but
    the rows it admits and the rows that drain it at the end come in batches of every size, and with
    ``cudnn.benchmark`` on each new shape would be tuned anew, which costs far more than the step
    (docs/benchmarks.md).
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
    try:
        yield model
    finally:
        torch.backends.cudnn.benchmark = benchmark
        for p, flag in flags:
            p.requires_grad_(flag)
