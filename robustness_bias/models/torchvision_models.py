"""ImageNet architectures from torchvision, fully fine-tuned with a head for the dataset's classes, as in the paper.

The machine may be offline, so ImageNet weights are downloaded only when asked (``imagenet.download=true``):
``pretrained=True`` reads them from ``weights_path`` or from torch hub's cache, where torchvision itself
would have saved them and where the opt-in download puts them, from the URL of torchvision's weights
enum and checked against the hash in its file name, as torchvision checks it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tv
from torch import nn
from torchvision.models import WeightsEnum

from ..config.models import TorchvisionModel
from ..errors import UserError
from ..checkpoints import UnreadableCheckpoint, load_checkpoint
from .common import _normalize


class MissingWeights(UserError, FileNotFoundError):
    """ImageNet weights were asked for but are not on this machine; the message says how to get them."""


@dataclass(frozen=True)
class _Architecture:
    constructor: Callable[..., nn.Module]
    weights: WeightsEnum  # what pretrained=True loads
    head: str  # the layer that becomes one for num_classes
    min_side: int  # smaller images shrink to nothing in the network's pooling


_ARCHITECTURES = {
    "alexnet": _Architecture(tv.alexnet, tv.AlexNet_Weights.IMAGENET1K_V1, "classifier.6", 63),
    "vgg19_bn": _Architecture(tv.vgg19_bn, tv.VGG19_BN_Weights.IMAGENET1K_V1, "classifier.6", 32),
    "resnet18": _Architecture(tv.resnet18, tv.ResNet18_Weights.IMAGENET1K_V1, "fc", 1),
    "resnet50": _Architecture(tv.resnet50, tv.ResNet50_Weights.IMAGENET1K_V1, "fc", 1),
    "densenet121": _Architecture(tv.densenet121, tv.DenseNet121_Weights.IMAGENET1K_V1, "classifier", 29),
    "squeezenet1_0": _Architecture(tv.squeezenet1_0, tv.SqueezeNet1_0_Weights.IMAGENET1K_V1, "classifier.1", 21),
}

# DenseNet checkpoints name layers 'norm.1', 'conv.2' where torchvision's modules are now 'norm1', 'conv2'.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def hub_file(name: str) -> tuple[str, Path]:
    """The URL of ``name``'s ImageNet weights (torchvision's weights enum) and their place in torch hub's cache."""
    url = _ARCHITECTURES[name].weights.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_weights_file(name: str, weights_path: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The file ``pretrained=True`` loads for ``name``: ``weights_path``, else torch hub's cached copy, which
    ``download`` fetches when it is missing."""
    url, cached = hub_file(name)
    path = Path(weights_path).expanduser() if weights_path else cached
    if path.is_file():
        return path
    if download and not weights_path:
        return download_weights(name)
    raise MissingWeights(missing_weights_message(name, path if weights_path else None))


def missing_weights_message(name: str, weights_path: Path | None = None, failure: str = "") -> str:
    url, cached = hub_file(name)
    if weights_path:
        problem = f"model.weights_path={weights_path} does not exist"
    else:
        problem = f"{cached.name} is not in torch hub's cache{failure}"
    return (f"model {name} with model.pretrained=true needs its ImageNet weights, but {problem}. "
            f"Download {cached.name} on a machine with internet from {url}, then either put it at {cached} "
            f"or pass model.weights_path=/path/to/{cached.name}. "
            f"Or set imagenet.pretrained=false to train {name} from scratch. "
            "With internet here, imagenet.download=true fetches them into torch hub's cache.")


def download_weights(name: str) -> Path:
    """Fetch ``name``'s ImageNet weights into torch hub's cache, checked against the SHA-256 prefix their file
    name carries (torchvision's own check); no network, a proxy or a bad hash is :class:`MissingWeights`."""
    from ..console import interactive

    url, cached = hub_file(name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=torch.hub.HASH_REGEX.search(cached.name).group(1),
                                       progress=interactive())
    except Exception as error:   # URLError, a proxy's HTTPError, the hash's RuntimeError, a full disk: all the same
        raise MissingWeights(missing_weights_message(
            name, failure=f" and imagenet.download=true could not fetch it ({type(error).__name__}: {error})")) from error
    return cached


def weights_problem(name: str, pretrained: bool, weights_path: str | None = None, download: bool = False,
                    reachable: Callable[[str], str | None] | None = None) -> str | None:
    """Why a job with this torchvision model would stop for its ImageNet weights, or None: they are there,
    not needed, or to be downloaded from a URL that ``reachable`` (URL → problem or None) finds reachable.
    Nothing is downloaded or loaded: a sweep's pre-flight asks this of every job."""
    if name not in _ARCHITECTURES or not pretrained:
        return None
    try:
        imagenet_weights_file(name, weights_path)
        return None
    except MissingWeights as missing:
        if not (download and not weights_path):
            return str(missing)
    url, _ = hub_file(name)
    failure = reachable(url) if reachable is not None else None
    return None if failure is None else missing_weights_message(
        name, failure=f" and imagenet.download=true cannot reach {url} ({failure})")


def _imagenet_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    """The weights in ``path``, read as every checkpoint is (robustness_bias/checkpoints.py: no code runs)."""
    url, cached = hub_file(name)
    fix = f"pass model.weights_path=/path/to/{cached.name}, torchvision's file from {url}"
    try:
        state = load_checkpoint(path, fix)
    except UnreadableCheckpoint as error:
        raise ValueError(f"model.weights_path={path} {error.what}. Fix: {fix}") from None
    if not isinstance(state, dict):
        raise ValueError(f"model.weights_path={path} holds a {type(state).__name__}, not a state_dict. Fix: {fix}")
    for key in list(state):  # renamed in place: the file's version metadata stays with it
        new_key = _OLD_DENSENET_KEY.sub(r"\1\2", key)
        if new_key != key:
            state[new_key] = state.pop(key)
    return state


def _replace_head(network: nn.Module, head: str, num_classes: int) -> None:
    """A freshly initialised layer for ``num_classes`` in place of the ImageNet one."""
    parent, _, attribute = head.rpartition(".")
    old = network.get_submodule(head)
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes)
    else:  # SqueezeNet classifies with a 1×1 convolution
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
    setattr(network.get_submodule(parent), attribute, new)


def _check_input(name: str, input_shape: Sequence[int], min_side: int) -> None:
    channels, height, width = input_shape
    if channels != 3:
        raise ValueError(f"model {name} takes RGB images, but this dataset's images have {channels} channel(s)")
    if min(height, width) < min_side:
        raise ValueError(
            f"model {name} needs images of at least {min_side}×{min_side} pixels (its pooling shrinks smaller "
            f"ones to nothing), but this dataset's are {height}×{width}: resize them (dataset.image_size, or the model's input_size)"
        )


def _torchvision_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    normalization,
    pretrained: bool = TorchvisionModel.pretrained,
    weights_path: str | None = TorchvisionModel.weights_path,
    input_size: int | None = TorchvisionModel.input_size,
    download: bool = TorchvisionModel.download,
) -> nn.Sequential:
    """Normalize, then torchvision's network; ``pretrained`` loads ImageNet weights, then replaces the head.

    ``input_size`` resizes the images inside the model (bilinear, after normalization), so that an
    ImageNet network can be fine-tuned at its own resolution on small images (CIFAR's 32×32) while
    every distance is still measured in the dataset's pixels.
    """
    architecture = _ARCHITECTURES[name]
    channels = input_shape[0]
    _check_input(name, (channels, input_size, input_size) if input_size else input_shape, architecture.min_side)
    if pretrained:
        path = imagenet_weights_file(name, weights_path, download)
        network = architecture.constructor(weights=None)
        try:
            network.load_state_dict(_imagenet_state_dict(name, path))
        except RuntimeError as error:
            raise ValueError(f"{path} does not hold {name}'s ImageNet weights: {error}") from error
        _replace_head(network, architecture.head, num_classes)
    else:
        network = architecture.constructor(weights=None, num_classes=num_classes)
    layers = [_normalize(input_shape, normalization)]
    if input_size:
        layers.append(nn.Upsample(size=(input_size, input_size), mode="bilinear", align_corners=False))
    return nn.Sequential(*layers, network)


def alexnet(input_shape, num_classes, normalization, **options):
    """AlexNet; its max-pools need images of at least 63×63, so CIFAR must be resized."""
    return _torchvision_model("alexnet", input_shape, num_classes, normalization, **options)


def vgg19_bn(input_shape, num_classes, normalization, **options):
    """VGG-19 with BatchNorm; its five max-pools need images of at least 32×32."""
    return _torchvision_model("vgg19_bn", input_shape, num_classes, normalization, **options)


def resnet18(input_shape, num_classes, normalization, **options):
    """ResNet-18, the ResNet the paper's original code trained."""
    return _torchvision_model("resnet18", input_shape, num_classes, normalization, **options)


def resnet50(input_shape, num_classes, normalization, **options):
    """ResNet-50, the ResNet the paper reports."""
    return _torchvision_model("resnet50", input_shape, num_classes, normalization, **options)


def densenet121(input_shape, num_classes, normalization, **options):
    """DenseNet-121; its pooling needs images of at least 29×29."""
    return _torchvision_model("densenet121", input_shape, num_classes, normalization, **options)


def squeezenet1_0(input_shape, num_classes, normalization, **options):
    """SqueezeNet 1.0, classifying with a 1×1 convolution; it needs images of at least 21×21."""
    return _torchvision_model("squeezenet1_0", input_shape, num_classes, normalization, **options)
