"""One Hydra job: check the settings, train, audit at the first/middle/final epoch, test, log."""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from .audit import RobustnessAudit, shard_suffix
from .config import ConfigError, checked
from .data import ImageDataModule
from .estimators import Estimator, EstimatorMismatch
from .lock import first_process, folder_lock
from .models import load_weights, split_checkpoint
from .regularizer import RobustnessBiasPenalty
from .records import write_atomic
from .resume import EpochCheckpoint, resumable
from .analysis.summary import overall_accuracy, sigmas_of

log = logging.getLogger(__name__)


def instantiate(spec, *args, **kwargs):
    """Hydra's instantiate, but our own errors (bad data, bad settings) surface unwrapped."""
    try:
        return hydra_instantiate(spec, *args, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, (ValueError, FileNotFoundError)):
            raise error.__cause__ from None
        raise


def chosen_partition(cfg: DictConfig) -> list[str]:
    """The attributes whose groups the figures show: ``partition.by`` if given, else the selected
    partition configs (several of them also audit their intersection)."""
    return list(cfg.partition.get("by") or cfg.partition.get("attributes") or ["class"])


def check_partition(partition: list[str], datamodule: ImageDataModule) -> None:
    unknown = [p for p in partition if p not in datamodule.partitions]
    if unknown:
        raise ConfigError(f"partition {list(partition)}: this dataset has no {unknown}. "
                          f"Fix: choose among {datamodule.partitions} (partition=class works everywhere, "
                          "+partition.by=[<column>] for any attribute)")


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


def audit_only(cfg: DictConfig, model, epoch: int | None, datamodule: ImageDataModule, audit: RobustnessAudit,
               loggers) -> float:
    """mode=audit: no training; the estimators run once on the given model, recorded as the final audit."""
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")
    model = model.to(device).eval()
    audit.run(model, datamodule, device, epoch if epoch is not None else 0, ["final"], loggers, step=0)
    accuracy = overall_accuracy(audit.summaries["final"])
    for logger in loggers:
        logger.log_metrics({"test/acc": accuracy}, step=0)
    return accuracy


def build_penalty(cfg: DictConfig, datamodule: ImageDataModule) -> RobustnessBiasPenalty | None:
    """The regularizer of ``cfg.regularizer`` (none: ``{}``), its partition looked up on this dataset."""
    return instantiate(cfg.regularizer)(datamodule) if cfg.get("regularizer") else None


def build_module(cfg: DictConfig, model: torch.nn.Module, penalty: RobustnessBiasPenalty | None) -> L.LightningModule:
    """The LightningModule of ``cfg.module`` around ``model``, with the optimizer and schedule it completes."""
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return instantiate(cfg.module)(model, optimizer=instantiate(cfg.optim), scheduler=scheduler, penalty=penalty)


def build_estimators(cfg: DictConfig, model) -> dict[str, Estimator]:
    """The configured estimators; one that cannot measure this model is an error, or is skipped
    with a warning under ``audit.skip_unfit_estimators`` (sweeps over models that mix linear and
    non-linear ones, where only some can use the exact estimator)."""
    estimators = {name: instantiate(spec) for name, spec in cfg.estimator.items()}
    unfit = {}
    for name, estimator in estimators.items():
        try:
            estimator.check_model(model)
        except EstimatorMismatch as error:
            unfit[name] = error
    fitting = {name: e for name, e in estimators.items() if name not in unfit}
    if unfit and cfg.audit.skip_unfit_estimators and fitting:
        log.warning("skipping estimator(s) %s: they do not fit this model", sorted(unfit))
        return fitting
    if unfit:
        hint = f" For this model: estimator=[{','.join(fitting)}]" if fitting else ""
        raise EstimatorMismatch(" ".join(str(e) for e in unfit.values()) + hint)
    return estimators


# Settings that change how fast a job runs, how it reports or which shard of the audit it takes: left out
# of the fingerprint, so that e.g. a smaller batch chosen after running out of memory still resumes, and
# the shards of one audit share one fingerprint. Batch sizes do change DeepFool's distances by float
# rounding (4e-6 relative): the stored chunks of every estimator not batch-invariant are kept per batch
# size (audit.chunk_folder), so a resume never mixes chunks of two batch sizes.
SPEED_SETTINGS = {"trainer": ("default_root_dir", "enable_progress_bar"),
                  "audit": ("progress", "batch_size", "chunk_size", "shard", "num_shards"), "dataset": ("num_workers",)}
ESTIMATOR_SPEED_SETTINGS = ("batch_size", "forward_batch", "chunk_size", "cuda_graphs", "gradients")


def settings_hash(cfg: DictConfig) -> str:
    """A fingerprint of everything that shapes a job's results (not where it writes, how it logs, nor how fast)."""
    settings = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                for key, value in cfg.items() if key not in ("paths", "logger", "callbacks")}
    for section, keys in SPEED_SETTINGS.items():
        for key in keys:
            settings.get(section, {}).pop(key, None)
    for estimator in settings.get("estimator", {}).values():
        for key in ESTIMATOR_SPEED_SETTINGS:
            estimator.pop(key, None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_result(output_dir: Path, fingerprint: str, shard: dict | None) -> dict | None:
    """The stored result of this very job (same settings, same shard) when it already finished here,
    so a rerun can skip it."""
    path = output_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if (result.get("settings_hash"), result.get("shard")) == (fingerprint, shard) else None


def choice_names(cfg: DictConfig) -> dict[str, str]:
    """The dataset and model names the job was composed with (Hydra's choices; class names otherwise)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
        return {"dataset": choices["dataset"], "model": choices["model"]}
    except (ValueError, KeyError):
        target = {key: str(cfg[key]._target_).rsplit(".", 1)[-1] for key in ("dataset", "model")}
        return {"dataset": target["dataset"].removesuffix("DataModule").lower(), "model": target["model"]}


def run(cfg: DictConfig) -> dict:
    """Train ``cfg.model`` on ``cfg.dataset`` and audit it; returns the job's headline numbers."""
    cfg = checked(cfg)
    output_dir = Path(cfg.paths.output_dir)
    with folder_lock(output_dir) if first_process() else nullcontext():
        return run_in(cfg, output_dir)


def run_in(cfg: DictConfig, output_dir: Path) -> dict:
    """The job of :func:`run`, in ``output_dir`` (which it holds)."""
    fingerprint = settings_hash(cfg)
    shard = {"index": cfg.audit.shard, "count": cfg.audit.num_shards} if cfg.audit.num_shards > 1 else None
    done = finished_result(output_dir, fingerprint, shard)
    if done is not None:
        log.info("already finished with the same settings in %s: skipped", output_dir)
        return {**done, "skipped": True}
    job = fingerprint + shard_suffix(cfg.audit.shard, cfg.audit.num_shards)   # what may resume
    checkpoint: EpochCheckpoint = instantiate(cfg.callbacks.epoch_checkpoint, settings_hash=job)
    resume_from = resumable(checkpoint.path, job) if cfg.mode == "train" else None   # a planted file stops us here
    L.seed_everything(cfg.seed, workers=True)
    datamodule: ImageDataModule = instantiate(cfg.dataset)
    datamodule.setup()
    write_atomic(output_dir / "dataset.json", lambda tmp: tmp.write_text(json.dumps(datamodule.facts, indent=2)))
    partition = chosen_partition(cfg)
    check_partition(partition, datamodule)
    model, checkpoint_epoch = build_model(cfg, datamodule)
    estimators = build_estimators(cfg, model)
    penalty = build_penalty(cfg, datamodule)

    loggers = [instantiate(spec) for spec in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    audit_options = {k: v for k, v in cfg.audit.items() if k != "skip_unfit_estimators"}
    audit = RobustnessAudit(estimators, output_dir, partition, **audit_options, settings_hash=fingerprint,
                            channels_last=cfg.module.channels_last)
    try:
        if cfg.mode == "audit":
            test_accuracy = audit_only(cfg, model, checkpoint_epoch, datamodule, audit, loggers)
        else:
            # the checkpoint before the audit, which Lightning calls in list order: see EpochCheckpoint
            trainer: L.Trainer = instantiate(cfg.trainer, callbacks=[checkpoint, audit], logger=loggers or False,
                                             enable_checkpointing=False)   # ours replaces Lightning's
            module = build_module(cfg, model, penalty)
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
            test_accuracy = trainer.test(trainer.lightning_module, datamodule=datamodule, verbose=False)[0]["test/acc"]
            if not trainer.is_global_zero:
                return {}   # with DDP, rank 0 holds the gathered audits and writes the result
        result = {**choice_names(cfg), "mode": cfg.mode, "settings_hash": fingerprint, "test_accuracy": test_accuracy,
                  "training_precision": str(cfg.trainer.get("precision", "32-true")) if cfg.mode == "train" else None,
                  "regularizer": OmegaConf.to_container(cfg.regularizer) if cfg.get("regularizer") else None,
                  "output_dir": str(output_dir), "bad_files": datamodule.facts.get("bad_files", []),
                  "audits": {tag: str(output_dir / "audits" / tag) for tag in audit.summaries},
                  "audit_chunks": audit.chunk_counts, "partition": audit.partition_name,
                  "summary_settings": audit.summary_settings, "shard": shard}
        result["sigma"] = sigmas_of(audit.summaries["final"], audit.partition_name)
        write_atomic(output_dir / "result.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
        log.info("test accuracy %.4f; records and figures in %s", result["test_accuracy"], output_dir)
        return result
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
