"""Randomized smoothing certification (Cohen, Rosenfeld & Kolter 2019), many images per forward pass.

CERTIFY: guess the smoothed classifier's class cA from N0 noisy copies, count how often cA wins
among N fresh copies, bound that probability from below with a one-sided Clopper–Pearson
interval at level α, and certify the L2 radius σ·Φ⁻¹(p̲A) — or abstain when p̲A < 0.5.

The noise of sample ``index`` comes in fixed chunks, each from a generator seeded by
(seed, index, stream, chunk), so radii do not depend on batch size, batch order or which other
images share a forward pass. A noisy copy whose logits hold a NaN or an infinity casts no vote,
and its sample fails as ``nonfinite_logits``: the votes of the others do not change.

Unless ``forward_batch`` is set, how many noisy images share a forward pass is measured by a short
timed probe (fastest_batch.py); the radii do not depend on it.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import beta, norm
from torch import nn

from ..config.estimators import SmoothingConfig
from ..config.rules import check_values
from .base import (ABSTAINED, LOWER, NO_FAILURE, NONFINITE_LOGITS, WRONG_CLASS, DistanceResult, Estimator,
                   nonfinite_rows)
from .fastest_batch import FastestBatches, ForwardProbe, buffer_like, fastest_forward_batch


def lower_confidence_bound(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion."""
    successes = np.asarray(successes)
    bound = beta.ppf(alpha, successes, trials - successes + 1)
    return np.where(successes > 0, bound, 0.0)


def chunk_seed(seed: int, index: int, stream: int, chunk: int) -> int:
    """A well-mixed 63-bit seed for one chunk of one sample's noise."""
    return int(np.random.SeedSequence([seed, index, stream, chunk]).generate_state(1, dtype=np.uint64)[0] >> 1)


class RandomizedSmoothing(Estimator):
    """Certified L2 radius of the Gaussian-smoothed classifier: a lower bound on its distance to the boundary.

    Abstentions, certificates of a wrong class and samples with non-finite logits on some noisy
    copy give radius 0 with ``success`` false, and say which in ``failure``. ``forward_batch=None``
    measures the fastest forward batch once per model, input shape, device and precision
    (``forward_batch_for``).
    """

    name = "rs"
    bound = LOWER   # of the smoothed classifier's distance to its boundary
    batch_invariant = True   # noise seeded per sample and chunk of noise (tests/test_reliability.py)

    schema = SmoothingConfig   # the parameters' defaults and ranges

    def __init__(self, sigma: float = SmoothingConfig.sigma, n0: int = SmoothingConfig.n0, n: int = SmoothingConfig.n,
                 alpha: float = SmoothingConfig.alpha, forward_batch: int | None = SmoothingConfig.forward_batch,
                 noise_chunk: int = SmoothingConfig.noise_chunk, seed: int = SmoothingConfig.seed,
                 compile: bool = SmoothingConfig.compile):
        check_values(SmoothingConfig, self.name, sigma=sigma, n0=n0, n=n, alpha=alpha, forward_batch=forward_batch,
                     noise_chunk=noise_chunk, seed=seed, compile=compile)
        self.sigma, self.n0, self.n, self.alpha = sigma, n0, n, alpha
        self.forward_batch, self.noise_chunk, self.seed = forward_batch, noise_chunk, seed
        self.compile = compile
        self._compiled: tuple[nn.Module, nn.Module] | None = None   # (model, its compiled forward)
        self._fastest = FastestBatches(self.name)   # the measured batches, per model and kind of input

    def batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> DistanceResult:
        guess_counts, guess_nonfinite = self.class_counts(model, x, index, self.n0, stream=0)
        guess = guess_counts.argmax(1)
        counts, nonfinite = self.class_counts(model, x, index, self.n, stream=1)
        wins = counts.gather(1, guess[:, None])[:, 0].cpu().numpy()
        p_lower = lower_confidence_bound(wins, self.n, self.alpha)
        failure = torch.full((len(x),), NO_FAILURE)   # each later code overrides the ones before
        failure[guess.cpu() != y.cpu()] = WRONG_CLASS
        failure[torch.as_tensor(p_lower < 0.5)] = ABSTAINED   # CERTIFY abstains before it names a class
        failure[(guess_nonfinite + nonfinite).cpu() > 0] = NONFINITE_LOGITS
        certified = failure == NO_FAILURE
        radius = torch.as_tensor(self.sigma * norm.ppf(np.maximum(p_lower, 0.5)), dtype=torch.float32)
        return DistanceResult(distance=torch.where(certified, radius, torch.zeros_like(radius)), success=certified,
                              queries=torch.full((len(x),), self.n0 + self.n, dtype=torch.long), failure=failure,
                              bound=self.bound)

    @torch.no_grad()
    def class_counts(self, model: nn.Module, x: torch.Tensor, index: torch.Tensor, num: int,
                     stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        """How often each class wins among ``num`` noisy copies of each image, (B, C), and how many
        copies gave non-finite logits instead, (B,)."""
        device = x.device
        forward_batch = self.forward_batch_for(model, x)
        buffer = buffer_like(x, forward_batch)
        owners = torch.empty(forward_batch, dtype=torch.long, device=device)
        generator = torch.Generator(device=device)
        counts: torch.Tensor | None = None
        nonfinite = torch.zeros(len(x), dtype=torch.long, device=device)
        forward = self.forward_of(model)
        filled = 0

        def flush(rows: int) -> None:
            nonlocal counts
            logits = forward(buffer)[:rows] if self.compile else forward(buffer[:rows])
            if counts is None:
                counts = torch.zeros(len(x), logits.shape[1], dtype=torch.long, device=device)
            bad = nonfinite_rows(logits).long()
            counts.view(-1).index_add_(0, owners[:rows] * counts.shape[1] + logits.argmax(1), 1 - bad)
            nonfinite.index_add_(0, owners[:rows], bad)

        for i in range(len(x)):
            for chunk, start in enumerate(range(0, num, self.noise_chunk)):
                size = min(self.noise_chunk, num - start)
                generator.manual_seed(chunk_seed(self.seed, int(index[i]), stream, chunk))
                noise = torch.randn(size, *x.shape[1:], generator=generator, device=device, dtype=x.dtype)
                offset = 0
                while offset < size:
                    take = min(size - offset, forward_batch - filled)
                    torch.add(x[i], noise[offset:offset + take], alpha=self.sigma, out=buffer[filled:filled + take])
                    owners[filled:filled + take] = i
                    filled, offset = filled + take, offset + take
                    if filled == forward_batch:
                        flush(filled)
                        filled = 0
        if filled:
            flush(filled)
        return counts, nonfinite

    @property
    def cap(self) -> float:
        """The largest radius N noisy samples can certify, where all N vote for the class: σ·Φ⁻¹(α^(1/N)),
        as ``batch`` computes it (in float32), so that a record at the cap compares equal to it."""
        p_lower = lower_confidence_bound(np.array([self.n]), self.n, self.alpha)
        return float(torch.as_tensor(self.sigma * norm.ppf(np.maximum(p_lower, 0.5)), dtype=torch.float32)[0])

    def forward_of(self, model: nn.Module) -> nn.Module:
        """The model, or with ``compile`` its torch.compile'd version (compiled once per model, for one
        fixed batch shape: every forward pass then gets the full buffer)."""
        if not self.compile:
            return model
        if self._compiled is None or self._compiled[0] is not model:
            self._compiled = (model, torch.compile(model, dynamic=False))
        return self._compiled[1]

    def forward_batch_for(self, model: nn.Module, x: torch.Tensor) -> int:
        """The set ``forward_batch``, or else the fastest one measured for this model on inputs like ``x``
        (fastest_forward_batch), probed once per input shape, dtype, memory format, device and autocast.

        The probe runs the model uncompiled: with ``compile`` every batch size tried would cost a
        compilation.
        """
        if self.forward_batch is not None:
            return self.forward_batch
        return self._fastest(model, x, self.probe)

    def probe(self, model: nn.Module, x: torch.Tensor) -> ForwardProbe:
        """fastest_forward_batch up to the noisy copies of a call on ``x``, uncached: benchmarks measure
        smoothing's floor where it is fastest, whatever ``forward_batch`` says."""
        return fastest_forward_batch(model, x, most=len(x) * max(self.n0, self.n))
