"""One Hydra job: check the settings, train, audit at the first/middle/final epoch, test, log (its parts: assembly.py)."""

from __future__ import annotations

import json
import logging
import time
import signal
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from .analysis.summary import sigmas_of
from .assembly import (build_model, build_module, build_penalty, build_plan, check_partition, choice_names,
                       chosen_partition, dashboard_identity, instantiate, partition_labels, summary_settings_of)
from .auditing import Auditor, Samples, accuracy, group_accuracies
from .auditing.logits import check_outputs
from .config.checks import checked
from .config.fingerprint import job_fingerprint
from .config.rules import ConfigError
from .console import interactive
from .data import ImageDataModule
from .lock import DISK_FULL, cannot_write, first_process, folder_lock
from .models import MissingWeights
from .preflight import model_problem
from .records import (audit_folder, finished_result, intersection_name, other_finished_job, read_chunk_counts,
                      read_summary, shard_suffix, write_atomic, write_json)
from .report.answer import job_answer
from .report.publish import Publisher
from .stopping import Stopped, stop_if_signalled, stop_on_signals
from .training import AuditSchedule, EpochLog, StopOnSignal, audit_schedule, resumable

log = logging.getLogger(__name__)


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


def refuse_other_data(output_dir: Path, content: str) -> None:
    """A folder whose unfinished job read other data (``dataset.json``'s ``content``) is not resumed with this
    data: its chunks and checkpoint measured other images. The same files in another folder are the same
    data (the fingerprint leaves out where the data lies), so a copied dataset resumes."""
    try:
        before = json.loads((output_dir / "dataset.json").read_text()).get("content")
    except (OSError, ValueError, AttributeError):   # none yet, or unreadable: nothing to compare
        return
    if before is not None and before != content:
        raise ConfigError(f"{output_dir} holds an unfinished job on other data (its data: {before}; the data read now: "
                          f"{content}), whose chunks and checkpoint this data must not resume. Fix: give this job its "
                          f"own folder (hydra.run.dir=…), or delete {output_dir}")


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
    refuse_other_data(output_dir, datamodule.facts["content"])
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
    summarizing = summary_settings_of(cfg, datamodule, partition)
    names = partition_labels(datamodule)
    bars = interactive()   # a redirected console gets a line per epoch and per audit instead of progress bars
    auditor = Auditor(plan, Samples(datamodule.table, datamodule.test_indices), output_dir, partition=partition,
                      settings_hash=fingerprint, shard=cfg.audit.shard, num_shards=cfg.audit.num_shards,
                      channels_last=cfg.module.channels_last, progress=cfg.audit.progress and bars,
                      publish=Publisher(output_dir / "figures", intersection_name(partition), summarizing, loggers, names,
                                        in_training=cfg.mode == "train"),
                      best=cfg.audit.best, in_training=cfg.mode == "train")
    try:
        train_seconds = None
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
            schedule = AuditSchedule(auditor)
            callbacks = [checkpoint, *([] if shown else [EpochLog()]), schedule, StopOnSignal()]
            trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, enable_progress_bar=shown,
                                             logger=loggers or False, enable_checkpointing=False)   # ours replaces Lightning's
            module = build_module(cfg, model, penalty)
            started = time.perf_counter()
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
            # this process's fit (a resumed job: since it resumed), less the audits run within it
            train_seconds = time.perf_counter() - started - schedule.seconds
            stop_if_signalled()   # arrived after the last batch: the audits are on disk, the rerun tests
            test_accuracy = trainer.test(trainer.lightning_module, datamodule=datamodule, verbose=False)[0]["test/acc"]
            if not trainer.is_global_zero:
                return {}   # with DDP, rank 0 holds the gathered audits and writes the result
            tags = auditor.planned([tag for tags in audit_schedule(cfg.trainer.max_epochs).values() for tag in tags])
        stop_if_signalled()   # arrived during the test: the rerun tests again
        audits, chunks = written_audits(output_dir, tags)
        trained = model if cfg.mode == "audit" else trainer.lightning_module.model
        by_group = group_accuracies(trained.eval(), auditor.samples, datamodule.partitions, cfg.module.channels_last)
        result = {**choice_names(cfg), "seed": cfg.seed, "mode": cfg.mode, "settings_hash": fingerprint, "test_accuracy": test_accuracy,
                  "training_precision": str(cfg.trainer.get("precision", "32-true")) if cfg.mode == "train" else None,
                  "regularizer": OmegaConf.to_container(cfg.regularizer) if cfg.get("regularizer") else None,
                  "balance_by": cfg.dataset.get("balance_by"), "train_seconds": train_seconds,
                  "group_accuracy": by_group,   # every test sample's, per group of the class and each attribute
                  "resumed": resume_from is not None,
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
