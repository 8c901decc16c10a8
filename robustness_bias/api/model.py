"""The model as the Python API audits it: behind its input normalization, on the device asked for, in eval mode,
checked cheaply before any estimator runs (float32 parameters, logits, channels first)."""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..auditing.logits import PROBE, check_logits
from ..models.common import Normalize
from .inputs import Source


def normalization_of(normalization) -> tuple[list[float], list[float]] | None:
    if normalization is None:
        return None
    if isinstance(normalization, Mapping):
        mean, std = normalization["mean"], normalization["std"]
    elif hasattr(normalization, "mean") and hasattr(normalization, "std"):   # torchvision's Normalize
        mean, std = normalization.mean, normalization.std
    else:
        mean, std = normalization
    return np.atleast_1d(np.asarray(mean, dtype=float)).tolist(), np.atleast_1d(np.asarray(std, dtype=float)).tolist()


@contextmanager
def prepared(model: nn.Module, normalize, device):
    """The model as audited: behind its input normalization, on ``device``; afterwards every module has
    its own training mode back and the model is where it was."""
    modes = [(module, module.training) for module in model.modules()]
    before = next((p.device for p in model.parameters()), None)
    audited = model
    if normalize is not None:
        layer = Normalize(*normalize)
        audited = nn.Sequential(layer.to(before) if before is not None else layer, model)
    if device is not None:
        audited.to(device)
    try:
        yield audited.eval()
    finally:
        if device is not None and before is not None:
            model.to(before)
        for module, training in modes:
            module.training = training


def device_of(device) -> torch.device | None:
    """The device asked for, where torch can use it (``device="cuda"`` without a GPU gets the fix, not
    torch's traceback from deep inside the first forward pass)."""
    if device is None:
        return None
    try:
        chosen = torch.device(device)
        torch.empty(0, device=chosen)
    except (RuntimeError, AssertionError) as error:   # torch built without CUDA asserts
        reason = str(error).splitlines()[0].split(". ")[0]
        raise ValueError(f"device={device!r} cannot be used here ({reason}). Fix: device='cpu', or leave device "
                         "out to audit the model where it is") from None
    return chosen


def check_precision(model: nn.Module) -> None:
    """The images reach the model in float32, in which the attacks measure: a float64 or half-precision
    model would fail at its first layer."""
    others = sorted({str(t.dtype).removeprefix("torch.") for t in (*model.parameters(), *model.buffers())
                     if t.is_floating_point()} - {"float32"})
    if others:
        raise ValueError(f"the model holds {' and '.join(others)} tensors, and the audit feeds it float32 images. "
                         "Fix: audit model.float()")


@torch.no_grad()
def class_names_of(model: nn.Module, source: Source, class_names, readers: list[str]) -> list[str]:
    """One name per output of the model (the records' ``class``): ``class_names`` or 0, 1, …; read off one
    forward pass on the first images, whose outputs must be logits for the estimators ``readers``
    (:func:`check_logits`)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs = 0
    if len(source):
        logits = _outputs(model, torch.stack([source.image(i) for i in range(min(PROBE, len(source)))]).to(device))
        check_logits(logits, readers)
        outputs = logits.shape[-1]
    names = [str(k) for k in range(outputs)] if class_names is None else [str(c) for c in class_names]
    if len(names) != outputs:
        raise ValueError(f"class_names has {len(names)} names but the model gives {outputs} outputs")
    if len(source) and source.labels.max() >= outputs:
        raise ValueError(f"a label is {source.labels.max()} but the model gives {outputs} outputs (classes 0..{outputs - 1})")
    return names


def _outputs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's outputs on ``images``; images that the model takes only with their last axis moved first
    are named as laid out channels-last, (H, W, C), with the fix."""
    try:
        return model(images)
    except RuntimeError:
        if images.dim() != 4 or not _takes(model, images.permute(0, 3, 1, 2)):
            raise
    raise ValueError(f"the images are laid out channels-last, (H, W, C) = {tuple(images.shape[1:])}: the model "
                     "takes them only as (C, H, W). Fix: pass X.permute(0, 3, 1, 2) (a dataset: give it a transform "
                     "to (C, H, W) tensors, such as torchvision's ToTensor)")


def _takes(model: nn.Module, images: torch.Tensor) -> bool:
    try:
        model(images)
    except RuntimeError:
        return False
    return True
