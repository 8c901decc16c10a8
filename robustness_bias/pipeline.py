"""One Hydra job: check the settings, train, audit at the first/middle/final epoch, test, log."""

from __future__ import annotations

import logging
import re
import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from .analysis.summary import SUMMARY_OPTIONS, sigmas_of
from .analysis.summary import summary_settings as audit_summary_settings
from .auditing import Auditor, EstimatorPlan, Samples, accuracy
from .auditing.logits import check_outputs
from .config import ConfigError, checked, job_fingerprint
from .console import interactive
from .data import ImageDataModule
from .estimators import EstimatorMismatch
from .lock import DISK_FULL, cannot_write, first_process, folder_lock
from .models import MissingWeights, load_weights, split_checkpoint
from .preflight import model_problem
from .records import (audit_folder, finished_result, other_finished_job, read_chunk_counts, read_summary, shard_suffix,
                      write_atomic, write_json)
from .report.console import job_answer
from .report.publish import Publisher
from .stopping import Stopped, stop_if_signalled, stop_on_signals
from .training import AuditSchedule, EpochLog, RobustnessBiasPenalty, StopOnSignal, audit_schedule, resumable

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


def build_plan(cfg: DictConfig, model) -> dict[str, EstimatorPlan]:
    """The selected estimators, each with its plan from ``audit.plan`` (defaults where it has none).

    Settings an experiment gives an estimator that is not selected (no ``_target_``) are ignored. An
    estimator that cannot measure this model is an error, or is skipped with a warning under
    ``audit.skip_unfit_estimators`` (sweeps over models that mix linear and non-linear ones, where
    only some can use the exact estimator).
    """
    estimators = {name: instantiate(spec) for name, spec in cfg.estimator.items() if "_target_" in spec}
    unfit = {}
    for name, estimator in estimators.items():
        try:
            estimator.check_model(model)
        except EstimatorMismatch as error:
            unfit[name] = error
    fitting = [name for name in estimators if name not in unfit]
    if unfit and not (cfg.audit.skip_unfit_estimators and fitting):
        hint = f" For this model: estimator=[{','.join(fitting)}]" if fitting else ""
        raise EstimatorMismatch(" ".join(str(e) for e in unfit.values()) + hint)
    if unfit:
        log.warning("skipping estimator(s) %s: they do not fit this model", sorted(unfit))
    plans = OmegaConf.to_container(cfg.audit.get("plan") or {})
    if cfg.mode == "audit":   # one audit of a given model: every estimator measures it, whatever its ``after``
        plans = {name: {key: value for key, value in (plans.get(name) or {}).items() if key != "after"} for name in plans}
    plan = {name: EstimatorPlan(estimators[name], **(plans.get(name) or {})) for name in fitting}
    if not any("final" in planned.after for planned in plan.values()):
        raise ConfigError(f"no selected estimator measures the final model (audit.plan.<estimator>.after). Fix: pass "
                          f"audit.plan.{fitting[0]}.after=[final]")
    return plan


def summary_settings(cfg: DictConfig, datamodule: ImageDataModule, partition: list[str]) -> dict:
    """The options of the per-group summaries: every single-attribute partition of the dataset, plus the
    chosen one when it combines attributes, and how σ and RB are computed."""
    options = {key: OmegaConf.to_container(cfg.audit[key]) if OmegaConf.is_config(cfg.audit[key]) else cfg.audit[key]
               for key in SUMMARY_OPTIONS}
    return audit_summary_settings(options, datamodule.partitions, partition)


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
    estimators = [name for name, spec in cfg.estimator.items() if "_target_" in spec]
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


def run(cfg: DictConfig) -> dict:
    """Train ``cfg.model`` on ``cfg.dataset`` and audit it; returns the job's headline numbers."""
    given, cfg = cfg, checked(cfg)
    output_dir = Path(cfg.paths.output_dir)
    try:
        with folder_lock(output_dir) if first_process() else nullcontext(), stopped_in(output_dir):
            result = run_in(cfg, output_dir, given)
    except OSError as error:   # records, chunks, summaries, figures, the checkpoint: whichever filled the disk
        if error.errno not in DISK_FULL:
            raise
        raise cannot_write(output_dir, error) from error
    if result:   # empty on DDP ranks other than 0
        show_answer(result)   # after the experiment loggers closed: the answer is the console's last word
    return result


@contextmanager
def stopped_in(output_dir: Path) -> Iterator[None]:
    """SIGTERM and SIGINT stop the job at the next stored chunk or training batch (robustness_bias.stopping),
    as :class:`Stopped` naming ``output_dir``. Lightning's own SIGTERM stop (its SIGTERMException, a
    SystemExit with status 0 that looked like success) becomes the same."""
    try:
        with stop_on_signals():
            try:
                yield
            except SIGTERMException:
                stop_if_signalled()
                raise Stopped(signal.SIGTERM) from None
    except Stopped as stopped:
        raise Stopped(stopped.signum, output_dir) from None


def partition_names(datamodule: ImageDataModule) -> dict[str, str]:
    """What the partitions are called where their column's name does not say it: ``class`` is the age
    bin on UTKFace and Adience. Shown in figures and on the console; records keep the column ``class``."""
    return {"class": datamodule.label_name} if datamodule.label_name else {}


def show_answer(result: dict) -> None:
    """The final audit's per-group table and where the job's files are: on the console and in the job's log."""
    summary = read_summary(audit_folder(Path(result["output_dir"]), "final"))
    log.info("%s", job_answer(summary, result, result.get("partition_names")))


def audit_device(cfg: DictConfig) -> torch.device:
    """Where mode=audit runs: the GPU when there is one, unless the trainer is told to use the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu")


def written_audits(output_dir: Path, tags) -> tuple[dict[str, str], dict[str, dict]]:
    """The job's audit folders by tag, and the chunks each audit reused and computed (by audit label)."""
    folders = {tag: audit_folder(output_dir, tag) for tag in tags}
    chunks = dict(filter(None, (read_chunk_counts(folder) for folder in folders.values())))
    return {tag: str(folder) for tag, folder in folders.items()}, chunks


def refuse_other_job(output_dir: Path, fingerprint: str, shard: dict | None) -> None:
    """A folder holding a finished job of other settings (or another shard) is never overwritten: a second
    ``hydra.run.dir=X`` with, say, another seed would silently replace the first job's results."""
    other = other_finished_job(output_dir, fingerprint, shard)
    if other is not None:
        ours = fingerprint + (shard_suffix(shard["index"], shard["count"]) if shard else "")
        raise ConfigError(f"{output_dir} holds a finished job of other settings ({other}; this job's: {ours}), which "
                          f"is never overwritten. Fix: give this job its own folder (hydra.run.dir=…), or delete "
                          f"{output_dir}")


def save_hydra_files(given: DictConfig, output_dir: Path) -> None:
    """Hydra's record of the job, ``.hydra/{config,hydra,overrides}.yaml`` (``given``: the config as Hydra
    composed it), once the job holds its folder and the folder is its own. conf/config.yaml turns Hydra's
    own writing off (``hydra.output_subdir: null``): Hydra writes them before any of the job's code runs,
    so a job refused its folder overwrote those of the job it was refused for. Nothing to do outside Hydra (tests, notebooks)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.instance().cfg   # the config's ``hydra`` node, under its key, as Hydra saves it
    files = {"config.yaml": given, "hydra.yaml": hydra, "overrides.yaml": hydra.hydra.overrides.task}
    for name, config in files.items():
        write_atomic(output_dir / ".hydra" / name, lambda tmp, config=config: tmp.write_text(OmegaConf.to_yaml(config)))


def run_in(cfg: DictConfig, output_dir: Path, given: DictConfig) -> dict:
    """The job of :func:`run`, in ``output_dir`` (which it holds); ``given``: the config as composed. A folder
    that holds a finished job of other settings is refused before anything is written to it."""
    fingerprint = job_fingerprint(cfg)
    shard = {"index": cfg.audit.shard, "count": cfg.audit.num_shards} if cfg.audit.num_shards > 1 else None
    refuse_other_job(output_dir, fingerprint, shard)
    save_hydra_files(given, output_dir)
    done = finished_result(output_dir, fingerprint, shard)
    if done is not None:
        log.info("already finished with the same settings in %s: skipped", output_dir)
        return {**done, "skipped": True}
    job = fingerprint + shard_suffix(cfg.audit.shard, cfg.audit.num_shards)   # what may resume
    checkpoint: EpochCheckpoint = instantiate(cfg.callbacks.epoch_checkpoint, settings_hash=job)
    resume_from = resumable(checkpoint.path, job) if cfg.mode == "train" else None   # a planted file stops us here
    L.seed_everything(cfg.seed, workers=True)
    datamodule: ImageDataModule = instantiate(cfg.dataset)
    missing = model_problem(cfg.model, reach=lambda url: None)   # before reading the data, which can take long
    if missing:                                                   # (a download is tried when the model is built)
        raise MissingWeights(missing)
    datamodule.setup()
    write_json(output_dir / "dataset.json", datamodule.facts)
    partition = chosen_partition(cfg)
    check_partition(partition, datamodule, cfg.audit.adjust_for)
    model, checkpoint_epoch = build_model(cfg, datamodule)
    plan = build_plan(cfg, model)
    penalty = build_penalty(cfg, datamodule)

    loggers = [instantiate(spec, **dashboard_identity(cfg, spec, output_dir))
               for spec in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    summarizing = summary_settings(cfg, datamodule, partition)
    names = partition_names(datamodule)
    bars = interactive()   # a redirected console gets a line per epoch and per audit instead of progress bars
    auditor = Auditor(plan, Samples(datamodule.table, datamodule.test_indices), output_dir, partition=partition,
                      settings_hash=fingerprint, shard=cfg.audit.shard, num_shards=cfg.audit.num_shards,
                      channels_last=cfg.module.channels_last, progress=cfg.audit.progress and bars,
                      publish=Publisher(output_dir / "figures", "×".join(partition), summarizing, loggers, names,
                                        in_training=cfg.mode == "train"),
                      best=cfg.audit.best, in_training=cfg.mode == "train")
    try:
        if cfg.mode == "audit":   # no training: the estimators run once on the given model, as the final audit
            audited = model.to(audit_device(cfg)).eval()
            check_outputs(audited, auditor.samples, plan, cfg.module.channels_last)   # logits? (trained here, they are)
            auditor(audited, checkpoint_epoch or 0, ["final"])
            test_accuracy = accuracy(audited, auditor.samples, cfg.module.channels_last)   # the whole test set's
            for logger in loggers:
                logger.log_metrics({"test/acc": test_accuracy}, step=0)
            tags = ["final"]
        else:
            # the checkpoint before the audit, which Lightning calls in list order: see EpochCheckpoint
            shown = cfg.trainer.enable_progress_bar and bars
            callbacks = [checkpoint, *([] if shown else [EpochLog()]), AuditSchedule(auditor), StopOnSignal()]
            trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, enable_progress_bar=shown,
                                             logger=loggers or False, enable_checkpointing=False)   # ours replaces Lightning's
            module = build_module(cfg, model, penalty)
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
            stop_if_signalled()   # arrived after the last batch: the audits are on disk, the rerun tests
            test_accuracy = trainer.test(trainer.lightning_module, datamodule=datamodule, verbose=False)[0]["test/acc"]
            if not trainer.is_global_zero:
                return {}   # with DDP, rank 0 holds the gathered audits and writes the result
            tags = auditor.planned([tag for tags in audit_schedule(cfg.trainer.max_epochs).values() for tag in tags])
        stop_if_signalled()   # arrived during the test: the rerun tests again
        audits, chunks = written_audits(output_dir, tags)
        result = {**choice_names(cfg), "seed": cfg.seed, "mode": cfg.mode, "settings_hash": fingerprint, "test_accuracy": test_accuracy,
                  "training_precision": str(cfg.trainer.get("precision", "32-true")) if cfg.mode == "train" else None,
                  "regularizer": OmegaConf.to_container(cfg.regularizer) if cfg.get("regularizer") else None,
                  "output_dir": str(output_dir), "bad_files": datamodule.facts.get("bad_files", []),
                  "audits": audits, "audit_chunks": chunks, "partition": auditor.partition_name,
                  "summary_settings": summarizing, "shard": shard, "partition_names": names,
                  "sigma": sigmas_of(read_summary(audit_folder(output_dir, "final")), auditor.partition_name)}
        write_json(output_dir / "result.json", result)
        return result
    finally:
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.finish()
