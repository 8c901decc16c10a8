"""Models that come from files: weights for a configured architecture, or a self-contained TorchScript model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def split_checkpoint(spec: dict) -> tuple[dict, str | None]:
    """A model config without its ``checkpoint`` (the builder's options), and the checkpoint.

    TorchScript keeps it: for that model the file *is* the model.
    """
    spec = dict(spec)
    if str(spec.get("_target_", "")).endswith(".torchscript"):
        return spec, None
    return spec, spec.pop("checkpoint", None)


def _existing(path: str | None, what: str) -> Path:
    if not path:
        raise ValueError(f"{what} needs model.checkpoint=/path/to/file")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"model.checkpoint={path}: no such file. Fix: point model.checkpoint at the saved model")
    return file


def load_weights(model: nn.Module, path: str) -> int | None:
    """Load a Lightning checkpoint (its ``model.`` weights) or a plain state_dict; returns the checkpoint's epoch."""
    saved = torch.load(_existing(path, "loading weights"), map_location="cpu", weights_only=False)
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"model.checkpoint={path} holds neither a Lightning checkpoint nor a state_dict "
                         "(for a TorchScript file use model=torchscript)")
    if all(key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"model.checkpoint={path} does not fit the configured model: {error}") from error
    return saved.get("epochs_completed", saved.get("epoch"))   # ours, else Lightning's (saved at the end of fit)


def torchscript(input_shape, num_classes, normalization, checkpoint: str | None = None) -> nn.Module:
    """A TorchScript model as saved (its own normalization included); it must output ``num_classes`` logits."""
    model = torch.jit.load(str(_existing(checkpoint, "model=torchscript")), map_location="cpu")
    with torch.no_grad():
        outputs = model(torch.zeros(1, *input_shape)).shape[-1]
    if outputs != num_classes:
        raise ValueError(f"the TorchScript model gives {outputs} outputs but the dataset has {num_classes} classes")
    return model
