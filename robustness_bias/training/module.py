"""The LightningModule that trains any classifier on (image, label, attributes) batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric

from ..config.training import ModuleConfig
from .regularizer import RobustnessBiasPenalty


Optimizer = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
Scheduler = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


class Classifier(L.LightningModule):
    """Cross-entropy training of the wrapped ``model``, which maps [0,1] pixels to logits.

    ``optimizer`` and ``scheduler`` come from the config half-built (Hydra's ``_partial_``): the
    module completes them with its parameters and its optimizer; without a scheduler the learning
    rate stays constant. With a ``penalty`` the training loss adds the robustness-bias regularizer
    α · RB̃ (the paper's Appendix B); batches that lack one side of the partition train on
    cross-entropy alone and are counted; the penalty's running shares travel in the checkpoint.
    ``channels_last`` feeds image batches in NHWC order (the model should be converted too: see
    :func:`robustness_bias.assembly.build_model`); ``compile`` runs training and evaluation
    steps through ``torch.compile`` (the regularized step, which differentiates through input
    gradients, and the audits use the plain model; audits compile by their plans'
    ``compile``).
    """

    def __init__(self, model: nn.Module, optimizer: Optimizer, scheduler: Scheduler | None = None,
                 penalty: RobustnessBiasPenalty | None = None, channels_last: bool = ModuleConfig.channels_last,
                 compile: bool = ModuleConfig.compile):
        super().__init__()
        self.model = model
        self.make_optimizer, self.make_scheduler = optimizer, scheduler
        self.penalty = penalty
        self.skipped_batches = 0
        self.channels_last = channels_last
        # evaluation means as sums over samples, gathered across DDP ranks (whose shares may differ by one)
        self.evaluation_means = nn.ModuleDict({f"{stage}_{name}": MeanMetric() for stage in ("val", "test")
                                               for name in ("loss", "acc")})
        # Kept out of the module tree (plain __dict__ entry), so checkpoints hold the weights once, as model.*
        self.__dict__["step_model"] = torch.compile(model) if compile else model
        # the optimizer's settings are in the job's config; a checkpoint holds plain data only (weights_only loads)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler", "penalty"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images, labels, attributes = batch
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        if stage == "train" and self.penalty is not None:
            return self._regularized_step(images, labels, attributes)
        logits = self.step_model(images)
        loss = F.cross_entropy(logits, labels)
        self._log_loss(stage, loss, logits, labels)
        return loss

    def _regularized_step(self, images, labels, attributes) -> torch.Tensor:
        logits, penalty, running_gap, mean_distance = self.penalty(self.model, images, labels, attributes)
        loss = F.cross_entropy(logits, labels)
        self._log_loss("train", loss, logits, labels)
        if penalty is None:
            self.skipped_batches += 1
        else:
            loss = loss + penalty
        if running_gap is not None:
            self.log("reg/rb", running_gap, on_step=True, on_epoch=False, batch_size=len(labels))
        self.log("reg/skipped_batches", float(self.skipped_batches), on_step=True, on_epoch=False)
        for group, value in mean_distance.items():
            self.log(f"reg/proxy_distance/{group}", value, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def _log_loss(self, stage: str, loss, logits, labels) -> None:
        correct = (logits.argmax(1) == labels).float()
        if stage == "train":
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
            self.log("train/acc", correct.mean(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
            return
        loss_mean, acc_mean = self.evaluation_means[f"{stage}_loss"], self.evaluation_means[f"{stage}_acc"]
        loss_mean.update(loss.detach(), weight=len(labels))
        acc_mean.update(correct)
        self.log(f"{stage}/loss", loss_mean, on_step=False, on_epoch=True, prog_bar=stage != "test")
        self.log(f"{stage}/acc", acc_mean, on_step=False, on_epoch=True, prog_bar=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.penalty is not None:   # a resumed run goes on with the same lead
            checkpoint["penalty_running_shares"] = self.penalty.running.tolist()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.penalty is not None and "penalty_running_shares" in checkpoint:
            self.penalty.restore(checkpoint["penalty_running_shares"])

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.model.parameters())
        if self.make_scheduler is None:
            return optimizer
        schedule = {"scheduler": self.make_scheduler(optimizer), "interval": "epoch"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}
