"""PyramidNet (Han, Kim & Kim 2017, "Deep Pyramidal Residual Networks") for CIFAR-sized images.

Instead of doubling at each downsampling, the width grows by α / (number of units) at every residual
unit, from 16 to 16 + α channels (×4 out of bottleneck units). Shortcuts are parameter-free:
identity, average-pooled when the unit downsamples, and zero-padded to the extra channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config.models import PyramidNet
from .common import _normalize

_STEM_WIDTH = 16
_BOTTLENECK_EXPANSION = 4


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)


class PyramidUnit(nn.Module):
    """The paper's residual unit: BN-conv-BN-ReLU-conv-BN, or BN-conv1×1-BN-ReLU-conv3×3-BN-ReLU-conv1×1-BN.

    Neither starts with a ReLU nor has one after the addition, as the paper found best.
    """

    def __init__(self, in_channels: int, width: int, stride: int, bottleneck: bool):
        super().__init__()
        if bottleneck:
            self.out_channels = width * _BOTTLENECK_EXPANSION
            layers = [
                nn.BatchNorm2d(in_channels), _conv(in_channels, width, 1),
                nn.BatchNorm2d(width), nn.ReLU(), _conv(width, width, 3, stride),
                nn.BatchNorm2d(width), nn.ReLU(), _conv(width, self.out_channels, 1),
                nn.BatchNorm2d(self.out_channels),
            ]  # fmt: skip
        else:
            self.out_channels = width
            layers = [
                nn.BatchNorm2d(in_channels), _conv(in_channels, width, 3, stride),
                nn.BatchNorm2d(width), nn.ReLU(), _conv(width, width, 3),
                nn.BatchNorm2d(width),
            ]  # fmt: skip
        self.residual = nn.Sequential(*layers)
        self.shortcut = nn.AvgPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.residual(x)
        shortcut = self.shortcut(x)
        extra_channels = residual.shape[1] - shortcut.shape[1]
        return residual + F.pad(shortcut, (0, 0, 0, 0, 0, extra_channels))


def pyramidnet(
    input_shape: Sequence[int],
    num_classes: int,
    normalization,
    depth: int = PyramidNet.depth,
    alpha: int = PyramidNet.alpha,
    bottleneck: bool = PyramidNet.bottleneck,
) -> nn.Sequential:
    """PyramidNet with ``depth`` layers in three stages of equal length, the last two starting at stride 2.

    The paper's CIFAR-10 setting is α=64, depth 110, basic units; CIFAR-100 α=48, depth 164, bottleneck.
    """
    convs_per_unit = 3 if bottleneck else 2
    if depth < 2 + 3 * convs_per_unit or (depth - 2) % (3 * convs_per_unit):
        raise ValueError(
            f"pyramidnet depth={depth}: with {'bottleneck' if bottleneck else 'basic'} units the depth must be "
            f"2 + {3 * convs_per_unit}·n for n ≥ 1 (e.g. {2 + 3 * convs_per_unit * 18})"
        )
    units_per_stage = (depth - 2) // (3 * convs_per_unit)
    units = 3 * units_per_stage
    stride_two_units = {units_per_stage, 2 * units_per_stage}

    stem = nn.Sequential(_conv(input_shape[0], _STEM_WIDTH, 3), nn.BatchNorm2d(_STEM_WIDTH))
    body: list[PyramidUnit] = []
    channels = _STEM_WIDTH
    for index in range(units):
        width = round(_STEM_WIDTH + alpha * (index + 1) / units)
        body.append(PyramidUnit(channels, width, 2 if index in stride_two_units else 1, bottleneck))
        channels = body[-1].out_channels
    head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))

    model = nn.Sequential(OrderedDict(
        normalize=_normalize(input_shape, normalization), stem=stem, units=nn.Sequential(*body), head=head,
    ))  # fmt: skip
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model
