"""Model builders. Every model takes [0,1] pixels: input normalization is its first layer.

A builder is called as ``builder(input_shape=(C, H, W), num_classes=K, normalization={mean, std})``
(Hydra instantiates the model config with ``_partial_: true`` and the data module fills these in),
so every estimator measures distances in the same pixel space for every dataset.
"""

from .common import Normalize, _normalize, flattened_size
from .custom import adience_classifier, deep_cnn, deep_cnn_cifar100, utk_classifier
from .pyramidnet import pyramidnet
from .saved import load_weights, split_checkpoint, torchscript
from .small import logreg, small_cnn
from .torchvision_models import (
    MissingWeights,
    alexnet,
    densenet121,
    imagenet_weights_file,
    resnet18,
    resnet50,
    squeezenet1_0,
    vgg19_bn,
)

__all__ = [
    "MissingWeights",
    "Normalize",
    "_normalize",
    "adience_classifier",
    "alexnet",
    "deep_cnn",
    "deep_cnn_cifar100",
    "densenet121",
    "flattened_size",
    "imagenet_weights_file",
    "load_weights",
    "logreg",
    "pyramidnet",
    "resnet18",
    "resnet50",
    "small_cnn",
    "split_checkpoint",
    "squeezenet1_0",
    "torchscript",
    "utk_classifier",
    "vgg19_bn",
]
