"""Distance estimators: each maps (model, x, y) to a per-sample :class:`DistanceResult`: the
paper's exact distance, DeepFool, Carlini–Wagner and randomized smoothing, and Fast Minimum-Norm."""

from .base import EXACT, FAILURES, LOWER, UPPER, DistanceResult, Estimator, EstimatorMismatch
from .cw import CarliniWagner
from .deepfool import DeepFool
from .fmn import FastMinimumNorm
from .exact import ExactLinear, affine_parameters, non_affine_layers
from .smoothing import RandomizedSmoothing

__all__ = ["EXACT", "FAILURES", "LOWER", "UPPER", "CarliniWagner", "DeepFool", "DistanceResult", "Estimator", "EstimatorMismatch", "ExactLinear", "FastMinimumNorm",
           "RandomizedSmoothing", "affine_parameters", "non_affine_layers"]
