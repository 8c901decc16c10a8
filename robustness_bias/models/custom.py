"""The paper's networks trained from scratch on one dataset.

Each head's first Linear is sized from the features the network actually makes, so the sizes the paper
gives hold at the dataset's own image size (32×32 CIFAR, 200×200 UTKFace, 224×224 Adience) and
resized images still work.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .common import _normalize, flattened_size

# VGG-style stacks: (out_channels, padding, dropout after it) per conv3×3+BN+ReLU, "M" a 2×2 max-pool.
_DEEP_CNN_LAYERS = [
    (64, 1, 0.3), (64, 1, 0.0), "M",
    (128, 1, 0.4), (128, 1, 0.0), "M",
    (256, 1, 0.4), (256, 1, 0.4), (256, 1, 0.0), "M",
    (512, 1, 0.4), (512, 1, 0.4), (512, 1, 0.0), "M",
    (512, 1, 0.4), (512, 1, 0.4), (512, 1, 0.0), "M",
]  # fmt: skip
_DEEP_CNN_CIFAR100_LAYERS = [
    (128, 1, 0.0), (128, 1, 0.0), "M",
    (256, 1, 0.0), (256, 1, 0.0), "M",
    (512, 1, 0.0), (512, 1, 0.0), "M",
    (1024, 0, 0.0), "M",
]  # fmt: skip


def _vgg_features(in_channels: int, layers: Sequence, affine: bool = True) -> list[nn.Module]:
    """The layers of a ``_…_LAYERS`` list; ``affine=False`` gives BatchNorm no learned scale and shift."""
    features: list[nn.Module] = []
    for layer in layers:
        if layer == "M":
            features.append(nn.MaxPool2d(2))
            continue
        out_channels, padding, dropout = layer
        features += [nn.Conv2d(in_channels, out_channels, 3, padding=padding),
                     nn.BatchNorm2d(out_channels, affine=affine), nn.ReLU()]
        if dropout:
            features.append(nn.Dropout(dropout))
        in_channels = out_channels
    return features


def deep_cnn(input_shape: Sequence[int], num_classes: int, normalization) -> nn.Sequential:
    """The paper's CIFAR-10 Deep CNN: the classic VGG for CIFAR-10 with BatchNorm and dropout.

    Of the paper's "dropout 0.3–0.4", dropout 0.3 follows the very first conv and 0.4 every other conv
    but the last of its block, as in Zagoruyko's cifar.torch. At 32×32 the features are 512.
    """
    features = _vgg_features(input_shape[0], _DEEP_CNN_LAYERS)
    size = flattened_size(nn.Sequential(*features), input_shape, "deep_cnn")
    head = [nn.Dropout(0.5), nn.Linear(size, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(512, num_classes)]
    return nn.Sequential(_normalize(input_shape, normalization), *features, nn.Flatten(), *head)


def deep_cnn_cifar100(input_shape: Sequence[int], num_classes: int, normalization) -> nn.Sequential:
    """The paper's CIFAR-100 Deep CNN: conv3×3 + BatchNorm without affine parameters + ReLU, no dropout.

    At 32×32 the last conv (no padding) and max-pool leave 1024 features for the one Linear.
    """
    features = _vgg_features(input_shape[0], _DEEP_CNN_CIFAR100_LAYERS, affine=False)
    size = flattened_size(nn.Sequential(*features), input_shape, "deep_cnn_cifar100")
    return nn.Sequential(_normalize(input_shape, normalization), *features, nn.Flatten(), nn.Linear(size, num_classes))


def utk_classifier(input_shape: Sequence[int], num_classes: int, normalization) -> nn.Sequential:
    """The paper's UTKFace classifier: two conv + ReLU + dropout + max-pool stages and a 256-unit hidden layer."""
    features = [
        nn.Conv2d(input_shape[0], 32, 7, padding=2), nn.ReLU(), nn.Dropout(0.3), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.Dropout(0.3), nn.MaxPool2d(2),
    ]  # fmt: skip
    size = flattened_size(nn.Sequential(*features), input_shape, "utk_classifier")
    head = [nn.Linear(size, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, num_classes)]
    return nn.Sequential(_normalize(input_shape, normalization), *features, nn.Flatten(), *head)


def adience_classifier(input_shape: Sequence[int], num_classes: int, normalization) -> nn.Sequential:
    """Levi & Hassner's (2015) age and gender network, with BatchNorm where they had local response normalization.

    Three conv + BN + ReLU + max-pool(3, stride 2) stages (96 7×7 stride 4, 256 5×5, 384 3×3), then
    two 512-unit layers with dropout 0.5; at 224×224 or 227×227 the features are 384×6×6.
    """
    features: list[nn.Module] = []
    in_channels = input_shape[0]
    for out_channels, kernel, stride, padding in [(96, 7, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1)]:
        features += [nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding),
                     nn.BatchNorm2d(out_channels), nn.ReLU(), nn.MaxPool2d(3, stride=2)]
        in_channels = out_channels
    size = flattened_size(nn.Sequential(*features), input_shape, "adience_classifier")
    head = [nn.Linear(size, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(512, num_classes)]
    return nn.Sequential(_normalize(input_shape, normalization), *features, nn.Flatten(), *head)
