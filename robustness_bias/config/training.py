"""The schemas of the training groups: trainer, optim, scheduler, regularizer, module, callbacks, paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import MISSING

from .rules import FLAG, at_least_zero, elsewhere, fraction, optional, positive, setting, whole
from .models import PartialConfig


@dataclass
class TrainerConfig:
    """Lightning's Trainer: the arguments conf/trainer sets (add others with ``+trainer.<name>=…``)."""

    _target_: str = MISSING
    max_epochs: int = setting(whole(1, 5))
    accelerator: str = MISSING
    devices: Any = MISSING            # a count, a list of devices or auto
    precision: str = MISSING          # Lightning's names: 32-true, bf16-mixed, …
    deterministic: bool = setting(FLAG)
    log_every_n_steps: int = setting(whole(1, 10))
    enable_model_summary: bool = setting(FLAG)
    default_root_dir: str = elsewhere()
    enable_progress_bar: bool = setting(FLAG, True, shapes_results=False)
    gradient_clip_val: Optional[float] = setting(optional(positive(1.0), "for no clipping"), None,
                                                 hashed_at_default=False)   # the gradients' norm at most this
    strategy: str = "auto"            # ddp: trainer=ddp


@dataclass
class SGDConfig(PartialConfig):
    """torch.optim.SGD, given the network's parameters by the module."""

    lr: float = setting(positive(0.05))
    momentum: float = setting(fraction(0.9))
    weight_decay: float = setting(at_least_zero(0))
    nesterov: bool = setting(FLAG)


@dataclass
class CosineConfig(PartialConfig):
    """A cosine learning-rate schedule, given the optimizer by the module."""

    T_max: int = setting(whole(1, 5))   # epochs


@dataclass
class RegularizerConfig(PartialConfig):
    """The robustness-bias regularizer (the paper's Appendix B), completed with the dataset's partition."""

    alpha: float = setting(at_least_zero(1.0))
    tau: float = setting(at_least_zero(2.0))
    temperature: float = setting(positive(0.1))
    running_weight: float = setting(fraction(0.95))
    attribute: str = MISSING
    group: Optional[str] = MISSING


@dataclass
class ModuleConfig(PartialConfig):
    """The LightningModule; the pipeline hands it the network, the optimizer, the schedule and the regularizer."""

    channels_last: bool = setting(FLAG, False)   # NHWC model and batches, for training and audits (tensor cores)
    compile: bool = setting(FLAG, False)   # torch.compile the training steps (audits: audit.plan.<estimator>.compile)


@dataclass
class EpochCheckpointConfig:
    _target_: str = MISSING
    path: str = MISSING


@dataclass
class CallbacksConfig:
    """Lightning callbacks before the audit's (the pipeline adds that one last)."""

    epoch_checkpoint: EpochCheckpointConfig = MISSING


@dataclass
class PathsConfig:
    output_dir: str = MISSING
    data_dir: str = MISSING
