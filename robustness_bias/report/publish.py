"""Publishing one written audit: its per-group summary, its figures and its experiment-logger entries.

Reads the records from disk as the report does, so what a job shows while it trains is what the
report rebuilds later from the same files. The Python API (robustness_bias.api) summarizes and
draws through the same methods, so its tables and figures are the command line's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.summary import OVERALL, groups_without_sigma, least_robust, summarize
from ..records import read_records, write_published, write_summary
from .answer import partition_label
from .figures import sigma_figure, survival_figure

log = logging.getLogger(__name__)


class Publisher:
    """Summarizes an audit folder's records by group (``settings``: the options of
    :func:`~robustness_bias.analysis.summary.summarize`), draws its survival curves by
    ``partition`` and its σ per group into ``figures`` (None: no figures), and logs both to
    ``loggers`` (Lightning loggers; those that take tables and images, as W&B's, get the summary
    table and the figures). ``names`` says what partitions are where their column's name does not
    (``{"class": "age"}``): the figures show it beside the column's name. ``in_training=False`` (an
    audit of given weights) keeps epochs and tags out of its titles and messages.
    """

    def __init__(self, figures: str | Path | None, partition: str, settings: dict, loggers=(),
                 names: dict[str, str] | None = None, in_training: bool = True):
        self.figures = None if figures is None else Path(figures)
        self.partition, self.settings, self.loggers = partition, settings, list(loggers)
        self.names, self.in_training = dict(names or {}), in_training

    def _when(self, tag: str, epoch: int | None = None) -> str:
        """How titles and messages name the audit: ", final epoch" in a training run, nothing otherwise."""
        if not self.in_training:
            return ""
        return f" {tag} (epoch {epoch})" if epoch is not None else f", {tag} epoch"

    def __call__(self, folders: dict[str, Path], step: int = 0) -> pd.DataFrame:
        """Publishes one audit written under one or more tags (coinciding epochs): summarized once,
        then written, drawn and logged under each tag."""
        records = read_records(next(iter(folders.values())))
        summary = self.summarize(records, "+".join(folders))
        for tag, folder in folders.items():
            tagged = summary.assign(epoch_tag=tag)
            write_summary(folder, tagged)
            figures = self.draw(records, tagged, tag) if self.figures is not None else {}
            self.log(tagged, tag, step, figures)
            write_published(folder, list(figures.values()))   # last: what a rerun checks (records.published)
        return summary

    def summarize(self, records: pd.DataFrame, tag: str) -> pd.DataFrame:
        """The per-group table of ``records`` (audited under ``tag``); groups too small for σ are named
        in one warning."""
        summary = summarize(records, self.settings).assign(epoch_tag=tag)
        unmeasured = groups_without_sigma(summary)
        if unmeasured:
            log.warning("audit%s: no σ for %s (fewer correctly classified points than "
                        "audit.min_group_size=%d)", self._when(tag, int(records["epoch"].iloc[0])), "; ".join(unmeasured),
                        self.settings.get("min_group_size", 1))
        return summary

    def draw(self, records: pd.DataFrame, summary: pd.DataFrame, tag: str) -> dict[str, Path]:
        """Both figures into ``figures``, under the names the report and the README give them."""
        return {"survival": self.survival(records, tag, self.figures / f"{tag}_survival_{self.partition}.png"),
                "sigma": self.sigma(summary, tag, self.figures / f"{tag}_sigma.png")}

    def headline(self, summary: pd.DataFrame) -> dict:
        """Per estimator, the least robust group of the audited partition and its σ (a dashboard's run table)."""
        rows = summary[(summary["partition"] == self.partition) & (summary["group"] != OVERALL)]
        found = {}
        for estimator, mine in rows.groupby("estimator", observed=True, sort=False):
            group = least_robust(mine)
            if group is not None:
                found[f"least_robust/{estimator}"] = f"{self.partition}={group}"
                found[f"least_robust/{estimator}/sigma"] = float(mine.loc[mine["group"].astype(str) == group,
                                                                          "sigma"].iloc[0])
        return found

    def survival(self, records: pd.DataFrame, tag: str, path: Path | None):
        """Survival curves by the partition, at ``path`` (None: the open figure)."""
        options = {key: self.settings[key] for key in ("conditional", "failures", "tau_max") if key in self.settings}
        return survival_figure(records, self.partition, path, names=self.names,
                               title=f"Survival curves by {partition_label(self.partition, self.names)}{self._when(tag)}",
                               **options)

    def sigma(self, summary: pd.DataFrame, tag: str, path: Path | None):
        """σ(P) per group of every partition, at ``path`` (None: the open figure)."""
        return sigma_figure(summary, path, title=f"σ(P) per group{self._when(tag)}", names=self.names,
                            min_group_size=self.settings.get("min_group_size"))

    def log(self, summary: pd.DataFrame, tag: str, step: int, figures: dict[str, Path]) -> None:
        """σ and adjusted p per group (and σ adjusted for ``audit.adjust_for``, with its p) and the median
        distance per estimator as metrics, once under the tag (``audit/final/...``) and once against the epoch
        (``sigma/...`` beside ``audit/epoch``: one chart per group shows first, middle and final); with
        loggers that take them, the summary table, the figures, and the least robust group per estimator in
        the run's summary."""
        groups = summary[summary["group"] != OVERALL]
        names = [name for name in ("sigma", "p_adjusted", "adjusted_sigma", "adjusted_p_adjusted") if name in groups]
        values = {(r.estimator, name, f"{r.partition}={r.group}"): getattr(r, name)
                  for r in groups.itertuples() for name in names if np.isfinite(getattr(r, name))}
        metrics = {f"audit/{tag}/{estimator}/{name}/{group}": value for (estimator, name, group), value in values.items()}
        overall = summary[(summary["group"] == OVERALL) & (summary["partition"] == summary["partition"].iloc[0])]
        metrics.update({f"audit/{tag}/{r.estimator}/median_distance": r.median_distance
                        for r in overall.itertuples() if np.isfinite(r.median_distance)})
        by_epoch = {f"{name}/{estimator}/{group}": value for (estimator, name, group), value in values.items()}
        by_epoch["audit/epoch"] = int(summary["epoch"].iloc[0])
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
            if hasattr(logger, "log_by_epoch"):
                logger.log_by_epoch(by_epoch)
            if hasattr(logger, "headline") and tag == "final":
                logger.headline(self.headline(summary))
            if hasattr(logger, "log_table") and hasattr(logger, "log_image"):
                logger.log_table(key=f"audit/{tag}/summary", dataframe=summary.astype({"group": str}))
                for name, path in figures.items():
                    logger.log_image(key=f"audit/{tag}/figures/{name}", images=[str(path)], step=step)
