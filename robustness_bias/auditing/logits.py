"""Whether a model's outputs are logits, checked once, on a forward pass of the first images audited, before
any estimator runs (the API and ``mode=audit``; a model trained here is trained on the cross-entropy of its
outputs, which makes them logits).

The estimators read differences between a model's outputs: DeepFool linearizes them, CW and FMN descend
them. A softmax keeps the decision boundary, so the distance to it is the same, but on probabilities those
differences saturate (a confident image's are all near 0 or 1, their gradients near 0): the attacks find
other distances, and the groups' σ move. Probabilities are refused, with the fix, where an estimator
reads more than the argmax; smoothing alone counts only the argmax, which a softmax keeps, so an audit
by smoothing alone runs, with a warning. Log-probabilities keep every difference between logits
(log p_i − log p_j = z_i − z_j), all the attacks read, and the argmax: they are audited as the logits
they equal, with a warning (only the exact estimator refuses them: log-softmax is not affine).
"""

from __future__ import annotations

import logging

import torch

from ..errors import UserError
from ..estimators import LOWER
from .engine import Planned, Samples, batches

log = logging.getLogger(__name__)

PROBE = 8   # images the check runs the model on
TOLERANCE = 1e-3   # on a row's sum, or its logsumexp: a float32 softmax is 1 within 10⁻⁵ even over 1000 classes


class NotLogits(UserError, ValueError):
    """The model outputs probabilities, where the audit needs logits; the message says how to give them."""


def margin_readers(plan: Planned) -> list[str]:
    """The estimators of ``plan`` that read more of the outputs than their argmax: all but smoothing, whose
    lower bound counts the argmax's votes."""
    return [name for name, (estimator, _) in plan.items() if estimator.bound != LOWER]


def check_logits(outputs: torch.Tensor, readers: list[str]) -> None:
    """Raise :class:`NotLogits` where every row of ``outputs`` (the model's, one row per image) is ≥ 0 and sums
    to 1 and some estimator ``readers`` reads more than the argmax (warn where none does); warn where every
    row's logsumexp is 0. Rows with a NaN or an infinity say nothing; one output per image says nothing
    either (a softmax of it is constant)."""
    rows = outputs.detach().double()
    rows = rows[torch.isfinite(rows).all(1)] if rows.dim() == 2 else rows[:0]
    if not len(rows) or rows.shape[1] < 2:
        return
    seen = f"on the first {len(rows)} image{'s' if len(rows) > 1 else ''}"
    if (rows >= 0).all() and ((rows.sum(1) - 1).abs() <= TOLERANCE).all():
        if readers:
            raise NotLogits(f"the model outputs probabilities (every row ≥ 0, summing to 1, {seen}), and the attacks "
                            f"({', '.join(readers)}) need logits: differences between probabilities saturate and give "
                            "other distances. Fix: audit the model without its final softmax (one you cannot "
                            "change: the log of its outputs)")
        log.warning("the model outputs probabilities (every row ≥ 0, summing to 1, %s): audited as they are, since "
                    "smoothing counts only their argmax, the logits' own; an attack would need the logits (drop "
                    "the final softmax)", seen)
    elif (rows.logsumexp(1).abs() <= TOLERANCE).all():
        log.warning("the model outputs log-probabilities (every row's logsumexp is 0, %s): audited as the logits "
                    "they equal up to a constant per image (log-softmax keeps every difference between logits, "
                    "all the estimators read); audit it without its final log-softmax to silence this", seen)


@torch.no_grad()
def check_outputs(model: torch.nn.Module, samples: Samples, plan: Planned,
                  channels_last: bool = False) -> None:
    """:func:`check_logits` on the model's outputs for the first :data:`PROBE` samples, as the audit feeds them,
    for the estimators of ``plan``."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    first = samples.indices[:PROBE].tolist()
    if first:
        x, _ = next(batches(samples.dataset, first, len(first), device, channels_last))
        check_logits(model(x), margin_readers(plan))
