"""What every distance estimator returns, so that audits and reports treat them alike."""

from __future__ import annotations

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

    def searched(self, distance: torch.Tensor, queries: torch.Tensor, nonfinite: torch.Tensor) -> DistanceResult:
        """A chunk's result from its samples' final distances (+inf: none found), passes, and which met non-finite
        values."""
        success = torch.isfinite(distance)
        return DistanceResult(distance=distance, success=success, queries=queries,
                              failure=failure_codes(success, nonfinite), bound=self.bound)


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
