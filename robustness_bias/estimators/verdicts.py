"""Verdicts: whether a point fools the model, and where along its direction the boundary lies. They decide
what an attack reports, so they run at the model's own precision even when its search runs in bf16
(docs/design.md, "Faster passes")."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import l2_norm, nonfinite_rows


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

    def point(scale: torch.Tensor, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """The rows' points at ``scale`` (one per row of all of them) times their perturbations."""
        moved = x0[rows] + scale[rows].view(shape) * perturbation[rows]
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
        hit = fooled(model(point(torch.full_like(low, multiple), open_)), y[open_])
        spent[open_] += 1
        high[open_[hit]] = multiple
        low[open_[~hit]] = multiple
    return low, high, spent
