"""The Lightning callback that measures distances after the first, middle and final epoch (SPEC §3)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .data import ImageDataModule
from .estimators import DistanceResult, Estimator
from .records import write_table
from .reports.figures import sigma_figure, survival_figure
from .summary import OVERALL, group_summary


def audit_schedule(max_epochs: int) -> dict[int, list[str]]:
    """Epoch (1-based) → tags: first, middle (⌈E/2⌉) and final; coinciding epochs are audited once."""
    schedule: dict[int, list[str]] = {}
    for tag, epoch in (("first", 1), ("middle", math.ceil(max_epochs / 2)), ("final", max_epochs)):
        schedule.setdefault(epoch, []).append(tag)
    return schedule


class RobustnessAudit(L.Callback):
    """Runs every estimator on the test split and writes records, summary, figures and logger entries.

    Output per tag (first / middle / final) under ``output_dir``: ``audits/<tag>/records.parquet``
    (one row per sample × estimator), ``audits/<tag>/summary.{parquet,csv}`` (one row per group)
    and ``figures/<tag>_*.png``.
    """

    def __init__(self, estimators: dict[str, Estimator], output_dir: str | Path, partition: list[str],
                 every_nth: int = 1, batch_size: int = 256, conditional: bool = True, failures: str = "censor",
                 tau_max="pooled_max", rb_quantiles=(0.25, 0.5, 0.75), progress: bool = True,
                 min_group_size: int = 1, significance: dict | None = None):
        self.estimators = dict(estimators)
        self.output_dir = Path(output_dir)
        self.partition = list(partition)
        self.every_nth, self.batch_size, self.progress = every_nth, batch_size, progress
        self.metric_options = dict(conditional=conditional, failures=failures, tau_max=tau_max)
        self.rb_quantiles = tuple(rb_quantiles)
        self.group_options = dict(min_group_size=min_group_size, significance=dict(significance or {}))
        self.summaries: dict[str, pd.DataFrame] = {}

    @property
    def partition_name(self) -> str:
        return "×".join(self.partition)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        tags = audit_schedule(trainer.max_epochs).get(epoch)
        if tags and not trainer.sanity_checking:
            self.run(pl_module.model, trainer.datamodule, pl_module.device, epoch, tags, trainer.loggers,
                     trainer.global_step)

    def run(self, model: torch.nn.Module, datamodule: ImageDataModule, device, epoch: int, tags: list[str],
            loggers=(), step: int = 0) -> None:
        """Audit ``model`` now (in eval mode) and write what it finds under each of ``tags``."""
        was_training = model.training
        model.eval()
        try:
            records = self.measure(model, datamodule, device, label="+".join(tags))
        finally:
            model.train(was_training)
        records.insert(records.columns.get_loc("estimator") + 1, "epoch", epoch)
        partitions = self.partitions(datamodule, records)
        summary = group_summary(records, partitions, **self.metric_options, rb_quantiles=self.rb_quantiles,
                                **self.group_options)
        summary.insert(1, "epoch", epoch)
        for tag in tags:
            self.write(records.assign(epoch_tag=tag), summary.assign(epoch_tag=tag), tag, loggers, step)

    def partitions(self, datamodule: ImageDataModule, records: pd.DataFrame) -> list[str]:
        """Every single-attribute partition, plus the configured one when it combines attributes."""
        partitions = list(datamodule.partitions)
        if len(self.partition) > 1:
            records[self.partition_name] = pd.Categorical(records[self.partition].astype(str).agg("×".join, axis=1))
            partitions.append(self.partition_name)
        return partitions

    @torch.no_grad()
    def _predict(self, model, loader: DataLoader, device) -> np.ndarray:
        return torch.cat([model(x.to(device)).argmax(1).cpu() for x, _, _ in loader]).numpy()

    def measure(self, model: torch.nn.Module, datamodule: ImageDataModule, device, label: str) -> pd.DataFrame:
        """Records of every estimator on every ``every_nth`` test sample; only correct points are attacked.

        An estimator with its own ``every_nth`` audits every n-th of those samples only.
        """
        indices = datamodule.test_indices[::self.every_nth]
        loader = DataLoader(Subset(datamodule.table, indices.tolist()), batch_size=self.batch_size, shuffle=False)
        meta = datamodule.table.metadata(indices)
        meta["prediction"] = self._predict(model, loader, device)
        meta["correct"] = meta["prediction"] == meta["label"]
        frames = [self._estimate(name, estimator, model, datamodule, meta.iloc[::estimator.every_nth or 1], device, label)
                  for name, estimator in self.estimators.items()]
        records = pd.concat(frames, ignore_index=True)
        records["estimator"] = pd.Categorical(records["estimator"], categories=list(self.estimators))
        return records

    def _estimate(self, name: str, estimator: Estimator, model, datamodule: ImageDataModule, meta: pd.DataFrame,
                  device, label: str) -> pd.DataFrame:
        """One estimator's records on the samples in ``meta``, with a progress bar over the attacked ones."""
        attacked = meta.loc[meta["correct"], "sample_index"].to_numpy(copy=True)
        loader = DataLoader(Subset(datamodule.table, attacked.tolist()), batch_size=estimator.batch_size, shuffle=False)
        parts, start = [], 0
        with tqdm(total=len(attacked), desc=f"audit {label} · {name}", unit="img", disable=not self.progress,
                  leave=False) as bar:
            for x, y, _ in loader:
                index = torch.as_tensor(attacked[start:start + len(y)])
                start += len(y)
                parts.append(estimator(model, x.to(device), y.to(device), index=index))
                bar.update(len(y))
        distance = np.full(len(meta), np.nan)
        success = np.zeros(len(meta), dtype=bool)
        queries = np.zeros(len(meta), dtype=np.int64)
        if parts:
            result = DistanceResult.cat(parts)
            correct = meta["correct"].to_numpy()
            distance[correct] = result.distance.double().numpy()
            success[correct] = result.success.numpy()
            queries[correct] = result.queries.numpy()
        return meta.assign(estimator=name, precision=estimator.precision, distance=distance, success=success,
                           queries=queries)

    def write(self, records: pd.DataFrame, summary: pd.DataFrame, tag: str, loggers, step: int) -> None:
        folder = self.output_dir / "audits" / tag
        write_table(records, folder / "records.parquet")
        write_table(summary, folder / "summary.parquet")
        write_table(summary, folder / "summary.csv")
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
