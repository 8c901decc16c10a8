"""The Lightning callback that measures distances after the first, middle and final epoch (SPEC §3)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .data import ImageDataModule
from .estimators import FAILURES, DistanceResult, Estimator
from .estimators.base import nonfinite_rows
from .records import write_atomic, write_audit, write_table
from .report.figures import sigma_figure, survival_figure
from .analysis.summary import OVERALL, group_summary, groups_without_sigma

log = logging.getLogger(__name__)

NOT_ATTACKED = "misclassified"   # the failure column of samples the model already gets wrong


def audit_schedule(max_epochs: int) -> dict[int, list[str]]:
    """Epoch (1-based) → tags: first, middle (⌈E/2⌉) and final; coinciding epochs are audited once."""
    schedule: dict[int, list[str]] = {}
    for tag, epoch in (("first", 1), ("middle", math.ceil(max_epochs / 2)), ("final", max_epochs)):
        schedule.setdefault(epoch, []).append(tag)
    return schedule


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the weights, so that stored chunks are only ever reused for the very same model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def chunk_frame(chunk: np.ndarray, result: DistanceResult) -> pd.DataFrame:
    """One chunk's results as a table, keyed by sample index."""
    return pd.DataFrame({"sample_index": chunk, "distance": result.distance.double().numpy(),
                         "success": result.success.numpy(), "queries": result.queries.numpy(),
                         "failure": np.asarray(FAILURES, dtype=object)[result.failure.numpy()]})


def merge_shards(shards: dict[int, pd.DataFrame], num_shards: int) -> pd.DataFrame:
    """The records of an unsharded audit from those of its ``num_shards`` shards (shard index → records).

    Every shard must be there and every (estimator, sample) must appear once: a gap or a
    duplicate is an error, never a silently smaller or larger audit.
    """
    missing = sorted(set(range(num_shards)) - set(shards))
    if missing:
        raise ValueError(f"cannot merge the audit: shard(s) {missing} of {num_shards} are missing. "
                         f"Fix: run them (audit.shard=i audit.num_shards={num_shards}) before the report")
    frames = [shards[i] for i in range(num_shards)]
    for column in ("settings_hash", "weights_hash"):
        values = set().union(*(frame[column].unique() for frame in frames if column in frame))
        if len(values) > 1:
            raise ValueError(f"cannot merge shards with different {column} {sorted(values)}: they audited "
                             "different settings or weights")
    records = pd.concat(frames, ignore_index=True)
    duplicated = records.duplicated(["estimator", "sample_index"])
    if duplicated.any():
        raise ValueError(f"{int(duplicated.sum())} sample(s) appear in more than one shard, "
                         f"e.g. {records.loc[duplicated, 'sample_index'].iloc[0]}")
    return records.sort_values(["estimator", "sample_index"], kind="stable").reset_index(drop=True)


def summarize(records: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """The per-group table of one audit's records; ``settings`` as in :attr:`RobustnessAudit.summary_settings`."""
    options = dict(settings)
    summary = group_summary(records, options.pop("partitions"), **options)
    summary.insert(1, "epoch", records["epoch"].iloc[0])
    return summary


def shard_suffix(index: int, count: int) -> str:
    """``-shard{index}of{count}``, or nothing for a whole audit: what keeps one shard's partial work and
    checkpoints apart from another's."""
    return f"-shard{index}of{count}" if count > 1 else ""


def process_group() -> tuple[int, int]:
    """(rank, world size) of the running torch.distributed job; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def chunk_folder(partial: Path, estimator: Estimator) -> Path:
    """Where an estimator's chunks go: apart for each batch size unless its results ignore batching,
    so that a rerun under another batch size never mixes chunks no uninterrupted run would produce."""
    return partial if estimator.batch_invariant else partial.with_name(f"{partial.name}-batch{estimator.batch_size}")


def read_counts(path: Path) -> dict[str, int]:
    """Chunks reused and computed so far, summed over the attempts at one audit."""
    return json.loads(path.read_text()) if path.is_file() else {"reused": 0, "computed": 0}


def read_chunk(path: Path, chunk: np.ndarray) -> pd.DataFrame | None:
    """A stored chunk's results when they cover exactly these samples; None when it must be computed."""
    if not path.is_file():
        return None
    stored = pd.read_parquet(path)
    if not np.array_equal(stored["sample_index"].to_numpy(), chunk):
        log.warning("%s covers other samples than expected: recomputing it", path)
        return None
    return stored


class RobustnessAudit(L.Callback):
    """Runs every estimator on the test split and writes records, summary, figures and logger entries.

    Output per tag (first / middle / final) under ``output_dir``: ``audits/<tag>/records.parquet``
    (one row per sample × estimator), ``audits/<tag>/summary.{parquet,csv}`` (one row per group)
    and ``figures/<tag>_*.png``. Records carry ``settings_hash``, the fingerprint of the job's
    settings: an audit already on disk under the same hash and epoch is not run again.
    """

    def __init__(self, estimators: dict[str, Estimator], output_dir: str | Path, partition: list[str],
                 every_nth: int = 1, batch_size: int = 256, conditional: bool = True, failures: str = "censor",
                 tau_max="pooled_max", rb_quantiles=(0.25, 0.5, 0.75), progress: bool = True,
                 min_group_size: int = 1, significance: dict | None = None, chunk_size: int = 256,
                 shard: int = 0, num_shards: int = 1, settings_hash: str = "unhashed", channels_last: bool = False):
        if not 0 <= shard < num_shards:
            raise ValueError(f"audit.shard={shard} audit.num_shards={num_shards}: need 0 ≤ shard < num_shards")
        self.estimators = dict(estimators)
        self.output_dir = Path(output_dir)
        self.partition = list(partition)
        self.every_nth, self.batch_size, self.progress = every_nth, batch_size, progress
        self.metric_options = dict(conditional=conditional, failures=failures, tau_max=tau_max)
        self.rb_quantiles = tuple(rb_quantiles)
        self.group_options = dict(min_group_size=min_group_size, significance=dict(significance or {}))
        self.chunk_size, self.settings_hash = chunk_size, settings_hash
        self.shard, self.num_shards, self.channels_last = shard, num_shards, channels_last
        self.summaries: dict[str, pd.DataFrame] = {}
        self.summary_settings = {**self.metric_options, "rb_quantiles": list(self.rb_quantiles), **self.group_options}
        self.chunk_counts: dict[str, dict[str, dict[str, int]]] = {}   # label → estimator → reused/computed
        self._resumed_epoch: int | None = None

    @property
    def shard_label(self) -> str | None:
        """``"i/n"`` for shard i of an audit split into n sweep jobs; None for a whole audit."""
        return f"{self.shard}/{self.num_shards}" if self.num_shards > 1 else None

    @property
    def partition_name(self) -> str:
        return "×".join(self.partition)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        tags = audit_schedule(trainer.max_epochs).get(epoch)
        if tags and not trainer.sanity_checking:
            self._run_in_fit(trainer, pl_module, epoch, tags)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resumed_epoch = checkpoint.get("epochs_completed")   # see resume.EpochCheckpoint

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer, pl_module)   # training had nothing left to do: on_train_start never ran

    def _catch_up(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """After resuming from a checkpoint: take up the audits already on disk, and finish the one
        the interrupted run was doing on the checkpoint's weights (its stored chunks are reused)."""
        resumed, self._resumed_epoch = self._resumed_epoch, None
        if resumed is None:
            return
        for epoch, tags in audit_schedule(trainer.max_epochs).items():
            if epoch > resumed:   # still to come: training reaches it
                continue
            missing = [tag for tag in tags if not self.take_up(tag, epoch)]
            if missing and epoch == resumed:
                self._run_in_fit(trainer, pl_module, epoch, missing)
            elif missing:
                log.warning("the audit after epoch %d (%s) was lost and cannot be redone from this checkpoint",
                            epoch, "+".join(missing))

    def _run_in_fit(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int, tags: list[str]) -> None:
        self.run(pl_module.model, trainer.datamodule, pl_module.device, epoch, tags, trainer.loggers,
                 trainer.global_step)

    def take_up(self, tag: str, epoch: int) -> bool:
        """Adopt the summary of an audit finished earlier under the same settings; False when there is none."""
        folder = self.output_dir / "audits" / tag
        try:
            records = pq.ParquetFile(folder / "records.parquet")   # opened once; only its first row is needed
            summary = pd.read_parquet(folder / "summary.parquet")
        except FileNotFoundError:
            return False
        columns = [c for c in ("settings_hash", "epoch", "shard") if c in records.schema_arrow.names]
        stored = next(records.iter_batches(batch_size=1, columns=columns), None)
        first = stored.to_pylist()[0] if stored is not None and stored.num_rows else {}
        if (first.get("settings_hash"), first.get("epoch"), first.get("shard")) != (self.settings_hash, epoch,
                                                                                     self.shard_label):
            return False
        self.summaries[tag] = summary
        chunks = folder / "chunks.json"
        if chunks.is_file():   # so that result.json still counts the chunks of audits finished before a resume
            stored = json.loads(chunks.read_text())
            self.chunk_counts[stored["label"]] = stored["counts"]
        return True

    def run(self, model: torch.nn.Module, datamodule: ImageDataModule, device, epoch: int, tags: list[str],
            loggers=(), step: int = 0) -> None:
        """Audit ``model`` now (in eval mode) and write what it finds under each of ``tags``.

        The global random state is left as it was, so that training after an audit does not
        depend on how much of the audit a resumed run could reuse.
        """
        rank, world = process_group()
        part, parts = self.shard + self.num_shards * rank, self.num_shards * world
        weights = model_fingerprint(model)
        job = f"{self.settings_hash}-{weights}-e{epoch}{shard_suffix(part, parts)}"
        partial = self.output_dir / "audits" / ".partial" / job
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]):
                records = self.measure(model, datamodule, device, "+".join(tags), partial, part, parts)
        finally:
            model.train(was_training)
            for estimator in self.estimators.values():   # the attacks' CUDA graphs: training needs the memory
                estimator.release_memory()
        records.insert(records.columns.get_loc("estimator") + 1, "epoch", epoch)
        records.insert(0, "settings_hash", self.settings_hash)
        records.insert(1, "weights_hash", weights)
        if world > 1:   # every rank audited its shard: gather them, and let rank 0 alone write
            gathered: list = [None] * world
            torch.distributed.all_gather_object(gathered, records)
            records = merge_shards(dict(enumerate(gathered)), world)
        if self.shard_label:   # this job's part of an audit split across jobs (the report merges them)
            records.insert(2, "shard", self.shard_label)
        if rank == 0:
            self.summary_settings["partitions"] = self.partitions(datamodule, records)
            summary = summarize(records, self.summary_settings)
            unmeasured = groups_without_sigma(summary)
            if unmeasured:
                log.warning("audit after epoch %d: no σ for %s (fewer correctly classified points than "
                            "audit.min_group_size=%d)", epoch, "; ".join(unmeasured), self.group_options["min_group_size"])
            for tag in tags:
                self.write(records.assign(epoch_tag=tag), summary.assign(epoch_tag=tag), tag, loggers, step)
                counts = {"label": "+".join(tags), "counts": self.chunk_counts.get("+".join(tags), {})}
                write_atomic(self.output_dir / "audits" / tag / "chunks.json",
                             lambda tmp: tmp.write_text(json.dumps(counts)))
        if world > 1:
            torch.distributed.barrier()   # the records are on disk before any rank drops its chunks
        shutil.rmtree(partial, ignore_errors=True)   # the records now hold what the chunks held

    def partitions(self, datamodule: ImageDataModule, records: pd.DataFrame) -> list[str]:
        """Every single-attribute partition, plus the configured one when it combines attributes."""
        partitions = list(datamodule.partitions)
        if len(self.partition) > 1:
            records[self.partition_name] = pd.Categorical(records[self.partition].astype(str).agg("×".join, axis=1))
            partitions.append(self.partition_name)
        return partitions

    @torch.no_grad()
    def _predict(self, model, loader: DataLoader, device) -> np.ndarray:
        """Predicted classes; a sample whose logits are not finite gets -1 (never counted correct)."""
        predictions = []
        for x, _, _ in loader:
            logits = model(x.to(device))
            predictions.append(torch.where(nonfinite_rows(logits), -1, logits.argmax(1)).cpu())
        return torch.cat(predictions).numpy()

    def measure(self, model: torch.nn.Module, datamodule: ImageDataModule, device, label: str, partial: Path,
                part: int = 0, parts: int = 1) -> pd.DataFrame:
        """Records of every estimator on every ``every_nth`` test sample; only correct points are attacked.

        An estimator with its own ``every_nth`` audits every n-th of those samples only, and of
        these, shard ``part`` of ``parts`` takes every ``parts``-th. Work is saved in chunks under
        ``partial``, so a rerun after a crash resumes where it stopped.
        """
        indices = datamodule.test_indices[::self.every_nth]
        loader = DataLoader(Subset(datamodule.table, indices.tolist()), batch_size=self.batch_size, shuffle=False)
        meta = datamodule.table.metadata(indices)
        meta["prediction"] = self._predict(model, loader, device)
        meta["correct"] = meta["prediction"] == meta["label"]
        frames = [self._estimate(name, estimator, model, datamodule.table,
                                 meta.iloc[::estimator.every_nth or 1].iloc[part::parts], device, label, partial / name)
                  for name, estimator in self.estimators.items()]
        records = pd.concat(frames, ignore_index=True)
        records["estimator"] = pd.Categorical(records["estimator"], categories=list(self.estimators))
        records["failure"] = pd.Categorical(records["failure"], categories=[*FAILURES, NOT_ATTACKED])
        return records

    def _estimate(self, name: str, estimator: Estimator, model, table, meta: pd.DataFrame, device, label: str,
                  partial: Path) -> pd.DataFrame:
        """One estimator's records on the samples in ``meta``, chunk by chunk, with a progress bar.

        A chunk already stored under ``partial`` (by an interrupted run of the same settings on the
        same weights, and batch size where it matters) is read back instead of recomputed; the counts,
        summed over every attempt at this audit, go to :attr:`chunk_counts`.
        """
        attacked = meta.loc[meta["correct"], "sample_index"].to_numpy(copy=True)
        size = estimator.chunk_size or self.chunk_size
        chunks = [attacked[start:start + size] for start in range(0, len(attacked), size)]
        counts_file = partial / "counts.json"
        counts = self.chunk_counts.setdefault(label, {})[name] = read_counts(counts_file)
        parts = []
        with tqdm(total=len(attacked), desc=f"audit {label} · {name}", unit="img", disable=not self.progress,
                  leave=False) as bar:
            for number, chunk in enumerate(chunks):
                chunk_name = f"chunk-{number:05d}.parquet"
                stored = read_chunk(chunk_folder(partial, estimator) / chunk_name, chunk)
                if stored is None:
                    stored = chunk_frame(chunk, self._measure_chunk(name, estimator, model, table, chunk, device))
                    write_table(stored, chunk_folder(partial, estimator) / chunk_name)   # the batch size it ran at
                    counts["computed"] += 1
                else:
                    counts["reused"] += 1
                write_atomic(counts_file, lambda tmp: tmp.write_text(json.dumps(counts)))
                parts.append(stored)
                bar.update(len(chunk))
        distance = np.full(len(meta), np.nan)
        success = np.zeros(len(meta), dtype=bool)
        queries = np.zeros(len(meta), dtype=np.int64)
        failure = np.full(len(meta), NOT_ATTACKED, dtype=object)
        if parts:
            result = pd.concat(parts, ignore_index=True)
            correct = meta["correct"].to_numpy()
            distance[correct] = result["distance"].to_numpy()
            success[correct] = result["success"].to_numpy()
            queries[correct] = result["queries"].to_numpy()
            failure[correct] = result["failure"].to_numpy()
        return meta.assign(estimator=name, precision=estimator.precision, distance=distance, success=success,
                           queries=queries, failure=failure)

    def _measure_chunk(self, name: str, estimator: Estimator, model, table, chunk: np.ndarray,
                       device) -> DistanceResult:
        """The estimator on one chunk; on running out of GPU memory the batch size halves and the chunk retries."""
        while True:
            loader = DataLoader(Subset(table, chunk.tolist()), batch_size=estimator.batch_size, shuffle=False)
            try:
                parts, start = [], 0
                for x, y, _ in loader:
                    index = torch.as_tensor(chunk[start:start + len(y)])
                    start += len(y)
                    x = x.to(device)
                    if self.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    parts.append(estimator(model, x, y.to(device), index=index))
                return DistanceResult.cat(parts)
            except torch.cuda.OutOfMemoryError:
                if estimator.batch_size == 1:
                    raise
            # outside the handler, whose traceback holds the failed call's tensors: now they can go
            parts = None
            estimator.release_memory()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            estimator.batch_size //= 2
            log.warning("%s ran out of GPU memory: retrying the chunk with batch_size=%d", name, estimator.batch_size)

    def write(self, records: pd.DataFrame, summary: pd.DataFrame, tag: str, loggers, step: int) -> None:
        write_audit(self.output_dir / "audits" / tag, records, summary)
        self.summaries[tag] = summary
        figures = self.output_dir / "figures"
        survival = survival_figure(records, self.partition_name, figures / f"{tag}_survival_{self.partition_name}.png",
                                   title=f"Survival curves by {self.partition_name}, {tag} epoch",
                                   **self.metric_options)
        sigma = sigma_figure(summary, figures / f"{tag}_sigma.png", title=f"σ(P) per group, {tag} epoch")
        self.send_to_loggers(loggers, step, summary, tag, {"survival": survival, "sigma": sigma})

    def send_to_loggers(self, loggers, step: int, summary: pd.DataFrame, tag: str, figures: dict[str, Path]) -> None:
        groups = summary[summary["group"] != OVERALL]
        metrics = {f"audit/{tag}/{r.estimator}/{name}/{r.partition}={r.group}": getattr(r, name)
                   for r in groups.itertuples() for name in ("sigma", "p_adjusted") if np.isfinite(getattr(r, name))}
        overall = summary[(summary["group"] == OVERALL) & (summary["partition"] == summary["partition"].iloc[0])]
        metrics.update({f"audit/{tag}/{r.estimator}/median_distance": r.median_distance
                        for r in overall.itertuples() if np.isfinite(r.median_distance)})
        for logger in loggers:
            logger.log_metrics(metrics, step=step)
            if isinstance(logger, WandbLogger):
                logger.log_table(key=f"audit/{tag}/summary", dataframe=summary.astype({"group": str}))
                for name, path in figures.items():
                    logger.log_image(key=f"audit/{tag}/figures/{name}", images=[str(path)], step=step)
