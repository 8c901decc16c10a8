"""Distance estimators: each maps (model, x, y) to a per-sample :class:`DistanceResult`."""

from .base import DistanceResult, Estimator, EstimatorMismatch
from .exact import ExactLinear, affine_parameters, non_affine_layers

__all__ = ["DistanceResult", "Estimator", "EstimatorMismatch", "ExactLinear", "affine_parameters", "non_affine_layers"]
