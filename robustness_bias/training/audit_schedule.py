"""When to audit during training: after the first, middle and final epoch, as the paper
compares them (its Figs. 7 and 8, and §7.2)."""

from __future__ import annotations

import logging
import math
import time

import lightning as L

from ..auditing import Auditor
from .progress import exclude_from_epoch_bar

log = logging.getLogger(__name__)


def audit_schedule(max_epochs: int) -> dict[int, list[str]]:
    """Epoch (1-based) → tags: first, middle (⌈E/2⌉) and final; coinciding epochs are audited once."""
    schedule: dict[int, list[str]] = {}
    for tag, epoch in (("first", 1), ("middle", math.ceil(max_epochs / 2)), ("final", max_epochs)):
        schedule.setdefault(epoch, []).append(tag)
    return schedule


class AuditSchedule(L.Callback):
    """Runs ``auditor`` on the trained model after the scheduled epochs; nothing else of the audit is here.

    After resuming from a checkpoint it takes up the audits already on disk, and finishes the one
    the interrupted run was doing on the checkpoint's weights (whose stored chunks are reused).
    """

    def __init__(self, auditor: Auditor):
        self.auditor = auditor
        self._resumed_epoch: int | None = None
        self.seconds = 0.0   # spent auditing within fit (the job's training time leaves it out)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        tags = self.auditor.planned(audit_schedule(trainer.max_epochs).get(epoch, []))
        if tags and not trainer.sanity_checking:
            started = time.perf_counter()
            self.auditor(pl_module.model, epoch, tags, trainer.global_step)
            # the epoch bar's speed is training's; the audit has its own bars
            spent = time.perf_counter() - started
            self.seconds += spent
            exclude_from_epoch_bar(trainer, spent)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resumed_epoch = checkpoint.get("epochs_completed")   # see resume.EpochCheckpoint

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer, pl_module)   # training had nothing left to do: on_train_start never ran

    def _catch_up(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed, self._resumed_epoch = self._resumed_epoch, None
        if resumed is None:
            return
        for epoch, tags in audit_schedule(trainer.max_epochs).items():
            if epoch > resumed:   # still to come: training reaches it
                continue
            missing = [tag for tag in self.auditor.planned(tags) if not self.auditor.finished(tag, epoch)]
            if missing and epoch == resumed:
                started = time.perf_counter()
                self.auditor(pl_module.model, epoch, missing, trainer.global_step)
                self.seconds += time.perf_counter() - started
            elif missing:
                log.warning("the audit after epoch %d (%s) was lost and cannot be redone from this checkpoint",
                            epoch, "+".join(missing))
