"""The schemas of ``conf/model`` and ``conf/imagenet``: network builders the pipeline completes with the data's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING

from .rules import FLAG, Rule, optional, positive, setting, whole

INPUT_SIZE = optional(whole(1, 224), "to keep the dataset's size")
CHANNELS = Rule(lambda v: isinstance(v, list) and v and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                                            for c in v), "must list whole numbers ≥ 1", "[16,32]")


@dataclass
class PartialConfig:
    """An object the pipeline completes with what the job knows only when it runs (Hydra's ``_partial_``)."""

    _target_: str = MISSING
    _partial_: bool = True


@dataclass
class ModelConfig(PartialConfig):
    """A network builder; the pipeline calls it with the dataset's input shape, classes and normalization."""

    # the learning rate optim.lr takes by default: its family's (learning_rates); only through optim.lr does it
    # shape a result, and there the fingerprint holds it
    lr: float = setting(positive(0.05), MISSING, shapes_results=False)
    checkpoint: Optional[str] = None   # weights to load (mode=audit audits them)


@dataclass
class ImageNetConfig:
    """How the torchvision networks start: from ImageNet weights or from scratch, and at which input size.

    Its own group rather than keys of ``model``: a sweep over several models (logistic regression
    among them, which has neither) sets it once for the torchvision ones.
    """

    pretrained: bool = setting(FLAG, False)   # true: fine-tune from ImageNet weights (torch hub's cache or weights_path)
    # resize the images to this size inside the model (e.g. 224 for CIFAR); null: the dataset's size
    input_size: Optional[int] = setting(INPUT_SIZE, None)
    # true: fetch missing weights into torch hub's cache (torchvision's URLs, hash-checked); false: never. Where the
    # weights come from, not what they are
    download: bool = setting(FLAG, False, shapes_results=False)


@dataclass
class TorchvisionModel(ModelConfig):
    """A torchvision network behind the input normalization; its ImageNet settings link to ``imagenet``."""

    pretrained: bool = setting(FLAG, ImageNetConfig.pretrained)
    weights_path: Optional[str] = None   # a saved ImageNet state dict to use instead of torch hub's cache
    input_size: Optional[int] = setting(INPUT_SIZE, ImageNetConfig.input_size)
    download: bool = setting(FLAG, ImageNetConfig.download, shapes_results=False)


@dataclass
class SmallCNN(ModelConfig):
    """A few conv3×3+ReLU+maxpool blocks and an MLP head."""

    channels: List[int] = setting(CHANNELS, [16, 32])   # output channels of each block
    hidden: int = setting(whole(1, 64), 64)


@dataclass
class PyramidNet(ModelConfig):
    """PyramidNet at the paper's CIFAR-10 setting (conf/model/pyramidnet_bottleneck.yaml: its CIFAR-100 one)."""

    depth: int = setting(whole(1, 110), 110)   # layers with weights: 2 + 6·(units per stage) for basic units
    alpha: int = setting(whole(0, 64), 64)     # total widening: the last unit is 16 + α channels wide
    bottleneck: bool = setting(FLAG, False)    # basic units (two 3×3 convs); the builder checks the units fit depth
