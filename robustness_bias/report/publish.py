"""Publishing one written audit: its per-group summary, its figures and its experiment-logger entries.

Reads the records from disk as the report does, so what a job shows while it trains is what the
report rebuilds later from the same files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.summary import OVERALL, groups_without_sigma, summarize
from ..records import read_records, write_summary
from .figures import sigma_figure, survival_figure

log = logging.getLogger(__name__)


class Publisher:
    """Summarizes an audit folder's records by group (``settings``: the options of
    :func:`~robustness_bias.analysis.summary.summarize`), draws its survival curves by
    ``partition`` and its σ per group into ``figures``, and logs both to ``loggers`` (Lightning
    loggers; those that take tables and images, as W&B's, get the summary table and the figures).
    """

    def __init__(self, figures: str | Path, partition: str, settings: dict, loggers=()):
        self.figures, self.partition, self.settings, self.loggers = Path(figures), partition, settings, list(loggers)

    def __call__(self, folder: Path, tag: str, step: int = 0) -> pd.DataFrame:
        records = read_records(folder)
        summary = summarize(records, self.settings).assign(epoch_tag=tag)
        unmeasured = groups_without_sigma(summary)
        if unmeasured:
            log.warning("audit %s (epoch %d): no σ for %s (fewer correctly classified points than "
                        "audit.min_group_size=%d)", tag, records["epoch"].iloc[0], "; ".join(unmeasured),
                        self.settings.get("min_group_size", 1))
        write_summary(folder, summary)
        metric_options = {key: self.settings[key] for key in ("conditional", "failures", "tau_max") if key in self.settings}
        figures = {
            "survival": survival_figure(records, self.partition, self.figures / f"{tag}_survival_{self.partition}.png",
                                        title=f"Survival curves by {self.partition}, {tag} epoch", **metric_options),
            "sigma": sigma_figure(summary, self.figures / f"{tag}_sigma.png", title=f"σ(P) per group, {tag} epoch")}
        self.log(summary, tag, step, figures)
        return summary

    def log(self, summary: pd.DataFrame, tag: str, step: int, figures: dict[str, Path]) -> None:
        """σ and adjusted p per group and the median distance per estimator as metrics; with loggers that
        take them, the summary table and the figures."""
        groups = summary[summary["group"] != OVERALL]
        metrics = {f"audit/{tag}/{r.estimator}/{name}/{r.partition}={r.group}": getattr(r, name)
                   for r in groups.itertuples() for name in ("sigma", "p_adjusted") if np.isfinite(getattr(r, name))}
        overall = summary[(summary["group"] == OVERALL) & (summary["partition"] == summary["partition"].iloc[0])]
        metrics.update({f"audit/{tag}/{r.estimator}/median_distance": r.median_distance
                        for r in overall.itertuples() if np.isfinite(r.median_distance)})
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
            if hasattr(logger, "log_table") and hasattr(logger, "log_image"):
                logger.log_table(key=f"audit/{tag}/summary", dataframe=summary.astype({"group": str}))
                for name, path in figures.items():
                    logger.log_image(key=f"audit/{tag}/figures/{name}", images=[str(path)], step=step)
