"""The exact distance for affine classifiers such as multinomial logistic regression.

For logits f(x) = W x + b the decision region of the predicted class ŷ is a polytope, and the
distance to its boundary is min over k ≠ ŷ of (f_ŷ − f_k) / ‖w_ŷ − w_k‖₂. The [0,1] box is
ignored: with it the true distance can only be larger. Samples whose logits hold a NaN or an
infinity (a non-finite input, weight or bias) fail as ``nonfinite_logits``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config.estimators import ExactConfig
from ..config.rules import check_values
from .base import EXACT, DistanceResult, Estimator, EstimatorMismatch, failure_codes, nonfinite_rows

# Layers that keep a model affine in eval mode.
_AFFINE_LAYERS = (nn.Linear, nn.Flatten, nn.Identity, nn.Dropout, nn.Sequential)


def non_affine_layers(model: nn.Module) -> list[str]:
    """Names of the layer types that make ``model`` non-affine (empty for an affine model)."""
    from ..models import Normalize

    allowed = _AFFINE_LAYERS + (Normalize,)
    return sorted({type(m).__name__ for m in model.modules() if not isinstance(m, allowed)})


def affine_parameters(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-space weights W (C × D) and bias b (C) of an affine model, read off its Jacobian at 0.

    Going through autograd rather than the Linear layer's weights folds in the input
    normalization and any other affine layer.
    """
    device = next(model.parameters()).device
    zero = torch.zeros(1, *input_shape, device=device, requires_grad=True)
    with torch.enable_grad():
        bias = model(zero)[0]
        rows = [torch.autograd.grad(bias[k], zero, retain_graph=True)[0].flatten() for k in range(bias.numel())]
    return torch.stack(rows).double(), bias.detach().double()


class ExactLinear(Estimator):
    """Closed-form distance for affine models; refuses anything else with a clear error."""

    name = "exact"
    bound = EXACT

    schema = ExactConfig   # the parameter's default and range

    def __init__(self, rtol: float = ExactConfig.rtol):
        check_values(ExactConfig, self.name, rtol=rtol)
        self.rtol = rtol

    def check_model(self, model: nn.Module) -> None:
        offending = non_affine_layers(model)
        if offending:
            raise EstimatorMismatch(
                f"estimator 'exact' needs an affine model (like model=logreg), but this model has "
                f"non-linear layers: {', '.join(offending)}. Fix: use model=logreg, or drop 'exact' "
                f"from the estimator list."
            )

    @torch.no_grad()
    def batch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> DistanceResult:
        with torch.autocast(x.device.type, enabled=False):   # the closed form in float64, whatever the audit's precision
            return self._distance(model, x, y)

    def _distance(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DistanceResult:
        self.check_model(model)
        weights, bias = affine_parameters(model, tuple(x.shape[1:]))
        logits = x.flatten(1).double() @ weights.T + bias
        observed = model(x).double()
        nonfinite = nonfinite_rows(logits) | nonfinite_rows(observed)
        # Zeroed, those rows stay out of the affinity check below (a NaN would pass it silently).
        logits, observed = logits.masked_fill(nonfinite[:, None], 0), observed.masked_fill(nonfinite[:, None], 0)
        tolerance = self.rtol * (1.0 + observed.abs().max())
        if (logits - observed).abs().max() > tolerance:
            raise EstimatorMismatch("estimator 'exact': the model's outputs are not affine in its input")
        predicted = logits.argmax(1, keepdim=True)
        margins = logits.gather(1, predicted) - logits
        gram = weights @ weights.T
        diag = gram.diagonal()
        norms = (diag.gather(0, predicted[:, 0])[:, None] + diag[None, :] - 2 * gram[predicted[:, 0]]).clamp_min(0).sqrt()
        ratio = torch.where(norms > 0, margins / norms, torch.full_like(margins, float("inf")))
        ratio.scatter_(1, predicted, float("inf"))
        distance = ratio.min(1).values.float().masked_fill(nonfinite, float("inf"))
        success = torch.isfinite(distance)
        return DistanceResult(distance=distance.cpu(), success=success.cpu(), queries=torch.ones_like(y).cpu(),
                              failure=failure_codes(success, nonfinite).cpu(), bound=self.bound)
