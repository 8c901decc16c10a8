"""Models that come from files: weights for a configured architecture, or a self-contained TorchScript model."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import TORCHSCRIPT, UnreadableCheckpoint, load_checkpoint


def split_checkpoint(spec: dict) -> tuple[dict, str | None]:
    """A model config without its ``checkpoint`` (the builder's options), and the checkpoint.

    TorchScript keeps it: for that model the file *is* the model. The family's learning rate ``lr`` is the
    optimizer's (optim.lr takes it), not the builder's: it is left out.
    """
    spec = {key: value for key, value in spec.items() if key != "lr"}
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
    file = _existing(path, "loading weights")
    try:
        saved = load_checkpoint(file, "if you trust it, save the weights alone (torch.save(model.state_dict(), "
                                "path)) and pass that file; else do not use it")
    except UnreadableCheckpoint as error:   # torch refuses TorchScript archives under weights_only
        if error.what == TORCHSCRIPT:
            raise ValueError(f"model.checkpoint={path} is a TorchScript model. Fix: pass model=torchscript") from None
        raise ValueError(f"model.checkpoint={path} {error.what}. Fix: point model.checkpoint at a Lightning "
                         "checkpoint or a state_dict saved with torch.save(model.state_dict(), path)") from None
    state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"model.checkpoint={path} holds neither a Lightning checkpoint nor a state_dict "
                         "(for a TorchScript file use model=torchscript)")
    if all(isinstance(key, str) and key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"model.checkpoint={path} does not fit the configured model: {error}") from error
    return saved.get("epochs_completed", saved.get("epoch"))   # ours, else Lightning's (saved at the end of fit)


def torchscript(input_shape, num_classes, normalization, checkpoint: str | None = None) -> nn.Module:
    """A TorchScript model as saved (its own normalization included); it must output ``num_classes`` logits."""
    file = _existing(checkpoint, "model=torchscript")
    try:
        model = torch.jit.load(str(file), map_location="cpu")
    except RuntimeError:   # torch's reason is an internal miniz error about a "corrupted" file
        found = "is not a zip archive (a pickle?)" if not zipfile.is_zipfile(file) else "holds no scripted model"
        raise ValueError(f"model.checkpoint={checkpoint} is no TorchScript file: it {found}. Fix: save one with "
                         "torch.jit.save(torch.jit.script(model), path), or for weights (a state_dict or Lightning "
                         "checkpoint) pass the architecture instead of model=torchscript, e.g. model=resnet18") from None
    with torch.no_grad():
        outputs = model(torch.zeros(1, *input_shape)).shape[-1]
    if outputs != num_classes:
        raise ValueError(f"the TorchScript model gives {outputs} outputs but the dataset has {num_classes} classes")
    return model
