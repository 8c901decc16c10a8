"""What every distance estimator returns, so that audits and reports treat them alike (SPEC §2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DistanceResult:
    """Per-sample estimate of the L2 distance, in [0,1] pixel space, to the decision boundary.

    ``distance`` is ``+inf`` exactly where ``success`` is false: a failure never looks like a number.
    ``queries`` counts the forward and backward passes spent on each sample.
    """

    distance: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor

    def __post_init__(self):
        n = self.distance.shape[0]
        if self.success.shape != (n,) or self.queries.shape != (n,):
            raise ValueError("distance, success and queries must be 1-d and of equal length")

    @staticmethod
    def cat(parts: list["DistanceResult"]) -> "DistanceResult":
        return DistanceResult(
            distance=torch.cat([p.distance.detach().cpu() for p in parts]),
            success=torch.cat([p.success.detach().cpu() for p in parts]),
            queries=torch.cat([p.queries.detach().cpu() for p in parts]),
        )


class EstimatorMismatch(ValueError):
    """The estimator cannot measure this model (e.g. the exact estimator on a non-linear network)."""


class Estimator:
    """A callable ``(model, x, y) -> DistanceResult`` for correctly classified points ``x`` of class ``y``.

    ``check_model`` runs before any training, so a mismatch fails fast with a clear message.
    """

    name = "estimator"

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`EstimatorMismatch` when this estimator cannot measure ``model``."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DistanceResult:
        raise NotImplementedError
