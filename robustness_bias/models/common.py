"""What every builder shares: the input normalization layer and the feature-size probe."""

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


def flattened_size(features: nn.Module, input_shape: Sequence[int], model_name: str) -> int:
    """How many numbers ``features`` makes of one image, so a head's first Linear fits any input size.

    Runs one zero image in eval mode, which leaves BatchNorm's running statistics untouched.
    """
    features.eval()
    try:
        with torch.no_grad():
            return features(torch.zeros(1, *input_shape)).numel()
    except RuntimeError as error:
        size = "×".join(str(side) for side in input_shape)
        raise ValueError(f"{model_name} cannot take {size} images (channels×height×width): {error}") from error
    finally:
        features.train()
