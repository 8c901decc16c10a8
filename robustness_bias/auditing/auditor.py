"""One job's audits: measure (engine.py), write the records (records.py), hand them on to be published.

Who publishes them (summaries, figures, experiment loggers) is the caller's choice, passed in as a
function of the written audit's folder: the audit never reaches into the report that reads it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from ..records import (ChunkStore, audit_folder, intersection_name, merge_shards, partial_folder, published,
                       read_records, records_identity, stored_identity, weights_hash, write_chunk_counts, write_records)
from .engine import Planned, Samples, measure

log = logging.getLogger(__name__)

Publish = Callable[[dict[str, Path], int], None]   # ({tag: its audit folder}, training step)


def process_group() -> tuple[int, int]:
    """(rank, world size) of the running torch.distributed job; (0, 1) outside one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class Auditor:
    """Audits a model on ``samples`` by ``plan`` and writes what it finds under ``output_dir``.

    Each audit is written under one or more tags (first, middle, final: coinciding epochs are
    audited once) as ``audits/<tag>/records.parquet``, whose rows carry the fingerprints of the
    settings and the weights. Work in progress is stored in chunks, so a rerun after a crash
    resumes where it stopped. ``shard``/``num_shards`` split an audit across sweep jobs (the
    report merges them); under DDP each rank audits a share and rank 0 writes the whole.
    ``partition`` names the attributes whose intersection the records get as an extra column. With
    ``best`` the records gain the attacks' per-sample best bound as estimator ``best`` (best.py).
    ``in_training=False`` (an audit of given weights: the API, ``mode=audit``) keeps epochs and tags out of
    what it says.
    """

    def __init__(self, plan: Planned, samples: Samples, output_dir: str | Path, *,
                 partition: list[str] = ("class",), settings_hash: str = "unhashed", shard: int = 0,
                 num_shards: int = 1, channels_last: bool = False, progress: bool = True,
                 publish: Publish | None = None, best: bool = False, in_training: bool = True):
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard={shard} num_shards={num_shards}: need 0 ≤ shard < num_shards")
        self.plan, self.samples, self.output_dir = dict(plan), samples, Path(output_dir)
        self.partition, self.settings_hash = list(partition), settings_hash
        self.shard, self.num_shards = shard, num_shards
        self.channels_last, self.progress, self.publish, self.best = channels_last, progress, publish, best
        self.in_training = in_training

    @property
    def shard_label(self) -> str | None:
        """``"i/n"`` for shard i of an audit split into n sweep jobs; None for a whole audit."""
        return f"{self.shard}/{self.num_shards}" if self.num_shards > 1 else None

    @property
    def partition_name(self) -> str:
        return intersection_name(self.partition)

    def planned(self, tags: list[str]) -> list[str]:
        """Those of ``tags`` after which some estimator measures (``EstimatorPlan.after``)."""
        return [tag for tag in tags if self._plan_after([tag])]

    def _plan_after(self, tags: list[str]) -> Planned:
        return {name: (estimator, plan) for name, (estimator, plan) in self.plan.items() if set(plan.after) & set(tags)}

    def finished(self, tag: str, epoch: int) -> bool:
        """Whether the audit of ``tag`` after ``epoch`` is on disk under these settings, published."""
        folder = audit_folder(self.output_dir, tag)
        done = self.publish is None or published(folder)   # summary and figures of these very records
        return done and stored_identity(folder) == (self.settings_hash, epoch, self.shard_label)

    def unpublished(self, tags: list[str], weights: str, epoch: int) -> bool:
        """Whether the records of this very audit (settings, weights, epoch, shard) are written under every
        tag but not yet published: a job killed between its records and its summary and figures."""
        identity = {"settings_hash": self.settings_hash, "weights_hash": weights, "epoch": epoch,
                    "shard": self.shard_label}
        folders = [audit_folder(self.output_dir, tag) for tag in tags]
        return self.publish is not None and all(records_identity(folder) == identity for folder in folders)

    def __call__(self, model: torch.nn.Module, epoch: int, tags: list[str], step: int = 0) -> pd.DataFrame:
        """Audit ``model`` now (in eval mode) and write its records under each of ``tags``; returns them.

        The global random state is left as it was, so that training after an audit does not
        depend on how much of the audit a resumed run could reuse.
        """
        plan = self._plan_after(tags)
        if not plan:
            raise ValueError(f"no estimator measures after {'+'.join(tags)}: call only with Auditor.planned tags")
        rank, world = process_group()
        part, parts = self.shard + self.num_shards * rank, self.num_shards * world
        weights = weights_hash(model)
        partial = partial_folder(self.output_dir, self.settings_hash, weights, epoch, part, parts)
        if self.unpublished(tags, weights, epoch):   # killed after the records: only publishing is left
            folders = {tag: audit_folder(self.output_dir, tag) for tag in tags}
            if rank == 0:
                self.publish(folders, step)
            shutil.rmtree(partial, ignore_errors=True)
            return read_records(next(iter(folders.values())))
        label = "+".join(tags)
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]):
                records = measure(model, self.samples, plan, chunks=partial, part=part, parts=parts,
                                  channels_last=self.channels_last, progress=self.progress,
                                  label=label if self.in_training else "",
                                  best=self.best)
        finally:
            model.train(was_training)
            for estimator, _ in plan.values():   # the attacks' CUDA graphs: training needs the memory
                estimator.release_memory()
        counts = {name: ChunkStore(partial / name).counts for name in plan}
        attacked = records[records["correct"]].groupby("estimator", observed=True).size()
        log.info("%s: %s in %.1f s", f"audit {label} (epoch {epoch})" if self.in_training else "audit",
                 ", ".join(f"{name} {attacked.get(name, 0)} images" for name in plan),
                 time.perf_counter() - started)
        records.insert(records.columns.get_loc("estimator") + 1, "epoch", epoch)
        records.insert(0, "settings_hash", self.settings_hash)
        records.insert(1, "weights_hash", weights)
        if world > 1:   # every rank audited its shard: gather them, and let rank 0 alone write
            gathered: list = [None] * world
            torch.distributed.all_gather_object(gathered, records)
            records = merge_shards(dict(enumerate(gathered)), world)
        if self.shard_label:   # this job's part of an audit split across jobs (the report merges them)
            records.insert(2, "shard", self.shard_label)
        if len(self.partition) > 1:
            records[self.partition_name] = pd.Categorical(records[self.partition].astype(str).agg(intersection_name, axis=1))
        if rank == 0:
            folders = {tag: audit_folder(self.output_dir, tag) for tag in tags}
            for tag, folder in folders.items():
                write_records(folder, self._measured_after(records, tag).assign(epoch_tag=tag))
                write_chunk_counts(folder, label, counts)
            if self.publish is not None:
                self.publish(folders, step)
        if world > 1:
            torch.distributed.barrier()   # the records are on disk before any rank drops its chunks
        shutil.rmtree(partial, ignore_errors=True)   # the records now hold what the chunks held
        return records

    def _measured_after(self, records: pd.DataFrame, tag: str) -> pd.DataFrame:
        """The records of the estimators planned after ``tag`` (and the best bound of those that ran), when one
        audit serves coinciding tags."""
        derived = [name for name in records["estimator"].cat.categories if name not in self.plan]
        kept = [*self._plan_after([tag]), *derived]
        return records[records["estimator"].isin(kept)].assign(
            estimator=lambda frame: frame["estimator"].cat.remove_unused_categories())
