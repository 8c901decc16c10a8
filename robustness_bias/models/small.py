"""Small models for quick audits on a CPU."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from ..config.models import SmallCNN
from .common import _normalize, flattened_size


def logreg(input_shape: Sequence[int], num_classes: int, normalization) -> nn.Sequential:
    """Multinomial logistic regression on the flattened image: affine, so the exact estimator applies."""
    features = math.prod(input_shape)
    return nn.Sequential(_normalize(input_shape, normalization), nn.Flatten(), nn.Linear(features, num_classes))


def small_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    normalization,
    channels: Sequence[int] = tuple(SmallCNN().channels),
    hidden: int = SmallCNN.hidden,
) -> nn.Sequential:
    """A few conv3×3+ReLU+maxpool blocks and an MLP head: a quick non-linear model for CPU demos."""
    layers: list[nn.Module] = [_normalize(input_shape, normalization)]
    in_channels = input_shape[0]
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        in_channels = out_channels
    body = nn.Sequential(*layers)
    features = flattened_size(body, input_shape, "small_cnn")
    return nn.Sequential(body, nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
