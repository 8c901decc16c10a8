"""How training shows its progress: the epoch bar's speed is training's own, and without a terminal one line
per epoch replaces the bars.

The audits run inside ``on_train_epoch_end`` (see audit_schedule.py), while the epoch bar is still open:
tqdm's rate is its count over the time since the epoch began, so an epoch that trained in seconds
showed the speed of minutes. Its start is moved forward by the audit's duration (:func:`exclude_from_epoch_bar`).
"""

from __future__ import annotations

import logging
import time

import lightning as L

log = logging.getLogger(__name__)


def exclude_from_epoch_bar(trainer: L.Trainer, seconds: float) -> None:
    """Take ``seconds`` (an audit's) out of the time the epoch bar's speed divides by. (tqdm's ``unpause``
    cannot: it counts from the last ``update``, and Lightning's bars only ever ``refresh``.)"""
    bar = getattr(trainer.progress_bar_callback, "train_progress_bar", None)
    if bar is not None and hasattr(bar, "start_t"):   # tqdm has no public way to move its start: reset zeroes the count
        bar.start_t += seconds


class EpochLog(L.Callback):
    """One log line per epoch, for consoles that are not terminals, where progress bars are off: the
    epoch's training speed (batches over the time from its start to its last batch, validation and the
    audit excluded) and the validation metrics. Place it before the audit's callback."""

    def __init__(self):
        self.started = self.trained = 0.0
        self.batches = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started, self.batches = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.trained, self.batches = time.perf_counter(), self.batches + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = max(self.trained - self.started, 1e-9)
        metrics = trainer.callback_metrics
        shown = ", ".join(f"{name} {float(metrics[name]):.3f}" for name in ("val/loss", "val/acc") if name in metrics)
        log.info("epoch %d/%d: %d batches in %.1f s (%.1f it/s)%s", trainer.current_epoch + 1, trainer.max_epochs,
                 self.batches, seconds, self.batches / seconds, f"; {shown}" if shown else "")
