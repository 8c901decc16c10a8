"""Model builders. Every model takes [0,1] pixels: input normalization is its first layer.

A builder is called as ``builder(input_shape=(C, H, W), num_classes=K, normalization={mean, std})``
(Hydra instantiates the model config with ``_partial_: true`` and the data module fills these in),
so every estimator measures distances in the same pixel space for every dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(x − mean) / std per channel, as a layer so that attacks see raw pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        if (std_t <= 0).any():
            raise ValueError(f"normalization std must be positive, got {list(std)}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _normalize(input_shape: Sequence[int], normalization) -> Normalize:
    channels = input_shape[0]
    mean, std = list(normalization["mean"]), list(normalization["std"])
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ValueError(f"normalization has {len(mean)} means and {len(std)} stds for {channels}-channel images")
    return Normalize(mean, std)


def logreg(input_shape: Sequence[int], num_classes: int, normalization) -> nn.Sequential:
    """Multinomial logistic regression on the flattened image: affine, so the exact estimator applies."""
    features = int(torch.tensor(input_shape).prod())
    return nn.Sequential(_normalize(input_shape, normalization), nn.Flatten(), nn.Linear(features, num_classes))


def small_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    normalization,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
) -> nn.Sequential:
    """A few conv3×3+ReLU+maxpool blocks and an MLP head: a quick non-linear model for CPU demos."""
    layers: list[nn.Module] = [_normalize(input_shape, normalization)]
    in_channels = input_shape[0]
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        in_channels = out_channels
    body = nn.Sequential(*layers)
    with torch.no_grad():
        features = body(torch.zeros(1, *input_shape)).numel()
    return nn.Sequential(body, nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
