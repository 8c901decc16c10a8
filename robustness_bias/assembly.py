"""A job's parts, built from its config: the model, the module, the regularizer, the audit's plan, how the
dashboard names the run. pipeline.py runs the job with them."""

from __future__ import annotations

import logging
import re
import secrets
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from .analysis.summary import SUMMARY_OPTIONS, summary_settings
from .auditing import Planned, fitting_plan
from .config.job import selected_estimators
from .config.rules import ConfigError
from .data import ImageDataModule
from .errors import UserError
from .models import load_weights, split_checkpoint
from .records import write_atomic
from .training import RobustnessBiasPenalty

log = logging.getLogger(__name__)


def instantiate(spec, *args, **kwargs):
    """Hydra's instantiate, but our own errors (bad data, bad settings) surface unwrapped."""
    try:
        return hydra_instantiate(spec, *args, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (UserError, ValueError, FileNotFoundError)):
            raise error.__cause__ from None
        raise



def chosen_partition(cfg: DictConfig) -> list[str]:
    """The attributes whose groups the figures show: ``partition.by`` if given, else the selected
    partition configs (several of them also audit their intersection)."""
    return list(cfg.partition.get("by") or cfg.partition.get("attributes") or ["class"])



def check_partition(partition: list[str], datamodule: ImageDataModule, adjust_for=()) -> None:
    """Before training: the partition's and ``audit.adjust_for``'s attributes are the dataset's."""
    unknown = [p for p in partition if p not in datamodule.partitions]
    if unknown:
        raise ConfigError(f"partition {list(partition)}: this dataset has no {unknown}. "
                          f"Fix: choose among {datamodule.partitions} (partition=class works everywhere, "
                          "+partition.by=[<column>] for any attribute)")
    unknown = [a for a in adjust_for if a not in datamodule.partitions]
    if unknown:
        raise ConfigError(f"audit.adjust_for={list(adjust_for)}: this dataset has no {unknown}. "
                          f"Fix: adjust for some of {datamodule.partitions}")



def build_model(cfg: DictConfig, datamodule: ImageDataModule) -> tuple[torch.nn.Module, int | None]:
    """The configured model at the dataset's input size, with ``model.checkpoint``'s weights when given.

    Returns the model and the epoch its checkpoint was saved after (None when unknown).
    """
    spec, checkpoint = split_checkpoint(OmegaConf.to_container(cfg.model, resolve=True))
    builder = instantiate(spec)
    try:
        model = builder(input_shape=datamodule.input_shape, num_classes=datamodule.num_classes,
                        normalization=datamodule.normalization)
        epoch = load_weights(model, checkpoint) if checkpoint else None
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if cfg.module.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, epoch



def build_penalty(cfg: DictConfig, datamodule: ImageDataModule) -> RobustnessBiasPenalty | None:
    """The regularizer of ``cfg.regularizer`` (none: ``{}``), its partition looked up on this dataset."""
    return instantiate(cfg.regularizer)(datamodule) if cfg.get("regularizer") else None



def build_module(cfg: DictConfig, model: torch.nn.Module, penalty: RobustnessBiasPenalty | None) -> L.LightningModule:
    """The LightningModule of ``cfg.module`` around ``model``, with the optimizer and schedule it completes."""
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return instantiate(cfg.module)(model, optimizer=instantiate(cfg.optim), scheduler=scheduler, penalty=penalty)



def build_plan(cfg: DictConfig, model: torch.nn.Module) -> Planned:
    """The selected estimators, each with its plan (``audit.plan.<estimator>``), that can measure ``model``
    (auditing/plan.py: an unfit one is an error, or skipped under ``audit.skip_unfit_estimators``)."""
    estimators = {name: instantiate(cfg.estimator[name]) for name in selected_estimators(cfg.estimator)}
    plans = {name: OmegaConf.to_object(cfg.audit.plan[name]) for name in estimators if name in cfg.audit.plan}
    return fitting_plan(estimators, plans, model, skip_unfit=cfg.audit.skip_unfit_estimators,
                        one_audit=cfg.mode == "audit", hint=lambda fitting: f" For this model: estimator=[{','.join(fitting)}]")


def summary_settings_of(cfg: DictConfig, datamodule: ImageDataModule, partition: list[str]) -> dict:
    """The options of the per-group summaries: every single-attribute partition of the dataset, plus the
    chosen one when it combines attributes, and how σ and RB are computed."""
    options = {key: OmegaConf.to_container(cfg.audit[key]) if OmegaConf.is_config(cfg.audit[key]) else cfg.audit[key]
               for key in SUMMARY_OPTIONS}
    return summary_settings(options, datamodule.partitions, partition)



def choice_names(cfg: DictConfig) -> dict[str, str]:
    """The dataset and model names the job was composed with (Hydra's choices; class names otherwise)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
        return {"dataset": choices["dataset"], "model": choices["model"]}
    except (ValueError, KeyError):
        target = {key: str(cfg[key]._target_).rsplit(".", 1)[-1] for key in ("dataset", "model")}
        return {"dataset": target["dataset"].removesuffix("DataModule").lower(), "model": target["model"]}



def dashboard_identity(cfg: DictConfig, logger: DictConfig, output_dir: Path) -> dict:
    """How a W&B dashboard names, groups and filters a job's run, where the logger's config does not say:
    ``<experiment>-<dataset>-<model>-s<seed>``, grouped by experiment, ``job_type`` train or audit, and tags;
    and the run's id, kept in the job's folder, so that a resumed job continues its run instead of opening
    a second one."""
    if not str(logger.get("_target_", "")).endswith("WandbLogger"):
        return {}
    names = choice_names(cfg)
    estimators = selected_estimators(cfg.estimator)
    identity = {"name": f"{cfg.name}-{names['dataset']}-{names['model']}-s{cfg.seed}", "group": cfg.name,
                "job_type": cfg.mode, "tags": [cfg.name, names["dataset"], names["model"], *estimators],
                "id": wandb_run_id(output_dir), "resume": "allow"}
    return {key: value for key, value in identity.items() if logger.get(key) is None}



def wandb_run_id(output_dir: Path) -> str:
    """The W&B run id of the job in ``output_dir``: made once, at random (ids are unique per project, which
    the same folder name on two machines is not), and read back by a rerun."""
    stored = output_dir / "wandb-run-id"
    kept = stored.read_text(errors="replace").strip() if stored.is_file() else ""
    if re.fullmatch(r"[0-9a-f]{8}", kept):   # anything else (a damaged or planted file) is replaced
        return kept
    run_id = secrets.token_hex(4)
    write_atomic(stored, lambda tmp: tmp.write_text(run_id))
    return run_id



def partition_labels(datamodule: ImageDataModule) -> dict[str, str]:
    """What the partitions are called where their column's name does not say it: ``class`` is the age
    bin on UTKFace and Adience. Shown in figures and on the console; records keep the column ``class``."""
    return {"class": datamodule.label_name} if datamodule.label_name else {}
