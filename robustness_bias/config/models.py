"""The schemas of ``conf/model`` and ``conf/imagenet``: network builders the pipeline completes with the data's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING

from .rules import FLAG, optional, positive, setting, whole


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

    pretrained: bool = setting(FLAG)
    input_size: Optional[int] = setting(optional(whole(1, 224), "to keep the dataset's size"))
    download: bool = setting(FLAG, False, shapes_results=False)   # where the weights come from, not what they are


@dataclass
class TorchvisionModel(ModelConfig):
    pretrained: bool = setting(FLAG)
    weights_path: Optional[str] = None
    input_size: Optional[int] = setting(optional(whole(1, 224), "to keep the dataset's size"))
    download: bool = setting(FLAG, False, shapes_results=False)


@dataclass
class SmallCNN(ModelConfig):
    channels: List[int] = MISSING
    hidden: int = setting(whole(1, 64))


@dataclass
class PyramidNet(ModelConfig):
    depth: int = setting(whole(1, 110))   # the builder checks that the units fit it
    alpha: int = setting(whole(0, 64))
    bottleneck: bool = setting(FLAG)
