"""The fastest forward batch of a model on images like a given batch, by a short timed probe.

Randomized smoothing (smoothing.py) runs its noisy copies through the model in batches of
``forward_batch`` images; unless that is set, the batch is measured here, not assumed: the best
batch differs by device, model and image size (on a CPU a large batch can run slower than a small
one; a GPU wants thousands), and the radii do not depend on it. :class:`FastestBatches` probes once
per model and kind of input and logs the rates it measured to the job's log file only.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from typing import Callable, NamedTuple

import torch
from torch import nn

from .base import is_channels_last

log = logging.getLogger(__name__)

SMALLEST_PROBE, LARGEST_PROBE = 16, 16384   # forward batches tried, doubling from the smallest
PROBE_SECONDS = 0.02      # timed passes per batch size: at least two, more until this much time is spent
LONG_PASS_SECONDS = 0.25  # no larger batch is tried after a pass this long: it bounds the probe's time and memory
CLEARLY_SLOWER = 0.9      # growth stops at a batch running below this share of the best images/s so far


class ForwardProbe(NamedTuple):
    batch: int                 # the fastest batch size tried
    rates: dict[int, float]    # images/s at each batch size tried


def buffer_like(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Room for ``rows`` images like ``x``, in ``x``'s memory format (a channels-last model wants
    channels-last inputs): smoothing's noisy copies, and the probe's, which times the same layout."""
    buffer = torch.empty(rows, *x.shape[1:], device=x.device, dtype=x.dtype)
    return buffer.contiguous(memory_format=torch.channels_last) if is_channels_last(x) else buffer


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast runs the forward passes in on ``device`` (an audit's plan sets it), or None."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def fastest_pass_seconds(forward: nn.Module, x: torch.Tensor, rows: int) -> float | None:
    """The shortest of a few timed forward passes over ``rows`` copies of ``x[0]``, after an untimed one
    (a new shape allocates memory, and cuDNN may tune for it); None when they do not fit in memory."""
    try:
        buffer = buffer_like(x, rows)
        buffer.copy_(x[:1].expand_as(buffer))
        forward(buffer)
        shortest, spent, passes = math.inf, 0.0, 0
        while passes < 2 or spent < PROBE_SECONDS:
            synchronize(x.device)
            start = time.perf_counter()
            forward(buffer)
            synchronize(x.device)
            took = time.perf_counter() - start
            shortest, spent, passes = min(shortest, took), spent + took, passes + 1
        return shortest
    except torch.cuda.OutOfMemoryError:
        return None


def probe_batches(most: int) -> list[int]:
    """Batch sizes doubling from SMALLEST_PROBE, ending at ``most`` (at most LARGEST_PROBE)."""
    most = min(most, LARGEST_PROBE)
    doubling = (SMALLEST_PROBE << k for k in range((LARGEST_PROBE // SMALLEST_PROBE).bit_length()))
    return [rows for rows in doubling if rows < most] + [most]


def fastest_forward_batch(forward: nn.Module, x: torch.Tensor, most: int = LARGEST_PROBE) -> ForwardProbe:
    """The batch size at which ``forward`` runs the most images/s on images like ``x``, by a short timed probe.

    Batch sizes double (probe_batches) and stop growing at the first that does not fit in GPU memory,
    runs clearly slower than the best so far (on a CPU throughput falls long before memory runs out),
    or takes LONG_PASS_SECONDS a pass (a GPU is busy by then; a longer probe costs more
    than it can save). The shortest of the timed passes counts, which other work on the machine
    disturbs least. Only the images' shape, device, dtype, memory format and the autocast in force
    matter; the global RNG is not touched.
    """
    rates: dict[int, float] = {}
    for rows in probe_batches(most):
        seconds = fastest_pass_seconds(forward, x, rows)
        if seconds is None:
            break
        rates[rows] = rows / seconds
        if seconds >= LONG_PASS_SECONDS or rates[rows] < CLEARLY_SLOWER * max(rates.values()):
            break
    if x.device.type == "cuda":
        torch.cuda.empty_cache()   # what a batch that ran out of memory left behind
    if not rates:
        raise torch.cuda.OutOfMemoryError(f"not even {probe_batches(most)[0]} images of shape "
                                          f"{tuple(x.shape[1:])} fit in one forward pass")
    return ForwardProbe(max(rates, key=rates.get), rates)


class FastestBatches:
    """The fastest forward batch of each model on each kind of input (shape, dtype, memory format, device
    and autocast), probed once each by ``probe(model, x)`` and logged as ``{name}: forward batch ...``
    with the rates measured, to the job's log file only. Models are held weakly."""

    def __init__(self, name: str):
        self.name = name
        self._measured: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # model → {input kind: batch}

    def __call__(self, model: nn.Module, x: torch.Tensor,
                 probe: Callable[[nn.Module, torch.Tensor], ForwardProbe]) -> int:
        kind = (tuple(x.shape[1:]), x.dtype, is_channels_last(x), x.device, autocast_dtype(x.device))
        measured = self._measured.setdefault(model, {})
        if kind not in measured:
            found = probe(model, x)
            measured[kind] = found.batch
            log.info("%s: forward batch %d for %s inputs of %s on %s (autocast: %s), the fastest measured "
                     "(images/s: %s)", self.name, found.batch, type(model).__name__, "×".join(map(str, x.shape[1:])),
                     x.device, autocast_dtype(x.device),
                     ", ".join(f"{rows}: {rate:,.0f}" for rows, rate in found.rates.items()),
                     extra={"console": False})   # the job's log file keeps it; the console need not
        return measured[kind]
