"""Training that survives being killed: a checkpoint after every epoch, written atomically.

The checkpoint is saved before that epoch's audit starts, so a run killed during an audit
resumes on the very weights it was auditing (and reuses the audit's stored chunks). It keeps the
global random states too, so that the epochs after a resume shuffle as an uninterrupted run would.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..checkpoints import UnsafeCheckpoint, load_checkpoint
from ..stopping import stop_if_signalled

log = logging.getLogger(__name__)


class EpochCheckpoint(L.Callback):
    """``last.ckpt`` after every training epoch, tagged with the settings that produced it.

    Place it before the audit callback: Lightning calls callbacks in list order.
    """

    def __init__(self, path: str | Path, settings_hash: str):
        self.path, self.settings_hash = Path(path), settings_hash

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # unique to this writer; under DDP only rank 0 writes (the others' names go unused), all wait for it
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            trainer.save_checkpoint(tmp, weights_only=False)   # the full state: optimizer, loops, callbacks
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["settings_hash"] = self.settings_hash
        checkpoint["epochs_completed"] = trainer.current_epoch + 1   # Lightning's "epoch" is 0-based here
        name, keys, position, has_gauss, gauss = np.random.get_state()
        checkpoint["random_states"] = {   # tensors and plain numbers: loadable with weights_only=True
            "torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get("random_states")
        if states:
            torch.set_rng_state(states["torch"])
            name, keys, position, has_gauss, gauss = states["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
            random.setstate(states["python"])


class StopOnSignal(L.Callback):
    """Ends training after the batch during which SIGTERM or SIGINT arrived (see robustness_bias.stopping).

    A rerun resumes from the last epoch's checkpoint. Lightning's own handlers stay as they are: its
    SIGTERM notice runs beside ours, and under SLURM with auto-requeue its requeue signal still saves
    and requeues.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop_if_signalled()


def resumable(path: Path, settings_hash: str) -> Path | None:
    """``path`` when it is a checkpoint of a run with these very settings, else None (start afresh).

    A file that holds more than weights and plain data was not written by this tool: it is refused
    (:class:`UnsafeCheckpoint`) rather than silently replaced, so that someone looks at it.
    """
    if not path.is_file():
        return None
    try:
        stored = load_checkpoint(path, f"delete it (rm {path}) if you did not write it; the job then trains "
                                       "from scratch", mmap=True).get("settings_hash")
    except UnsafeCheckpoint:
        raise
    except Exception as error:   # an unreadable checkpoint must not stop the job from starting over
        log.warning("cannot read %s (%s): training starts from scratch", path, error)
        return None
    if stored != settings_hash:
        log.warning("%s was written under other settings: training starts from scratch", path)
        return None
    log.info("resuming training from %s", path)
    return path
