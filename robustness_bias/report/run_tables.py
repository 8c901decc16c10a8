"""What each job's numbers rest on: the points every estimator attacked, failed on and capped, and the
settings (image size, epochs, learning rate, each estimator's budget) the job ran with.

A σ read without these can hide reduced settings or an attack that mostly failed; these tables name them
beside the results. The settings come from the config Hydra saved beside each job, read by
:func:`~robustness_bias.report.jobs.saved_config`, so none of its resolvers runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.summary import OVERALL
from ..config.job import selected_estimators
from .jobs import saved_config, saved_setting


def estimators_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """What every σ of a job's final audit rests on, per estimator: the correctly classified points it attacked,
    how many it failed on and how many sat at its cap, and the median distance it found; one row per (dataset,
    model, seed, estimator), from the summary's overall row."""
    rows = []
    for job in accuracy.itertuples():
        path = Path(job.job) / "audits" / "final" / "summary.parquet"
        if not path.is_file():
            continue
        summary = pd.read_parquet(path)
        if "attacked" not in summary:   # summaries written before failures were counted
            continue
        whole = summary[summary["group"] == OVERALL].drop_duplicates("estimator")
        for row in whole.itertuples():
            capped = getattr(row, "capped", np.nan)
            rows.append({"dataset": job.dataset, "model": job.model, "seed": job.seed, "estimator": row.estimator,
                         "attacked": row.attacked, "failed": row.failures,
                         "success %": 100 * (1 - row.failures / row.attacked) if row.attacked else np.nan,
                         "at cap %": 100 * capped / row.attacked if row.attacked else np.nan,
                         "median distance": row.median_distance})
    return pd.DataFrame(rows, columns=["dataset", "model", "seed", "estimator", "attacked", "failed", "success %",
                                       "at cap %", "median distance"])


def settings_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """The settings each job of the accuracy table ran with (from the config Hydra saved beside it): image
    size, epochs, learning rate, and each estimator's budget and sampling, so reduced settings are named
    in the report. The saved configs are read by :func:`saved_config`: none of their resolvers runs."""
    rows = []
    for job in accuracy.itertuples():
        saved = Path(job.job) / ".hydra" / "config.yaml"
        if not saved.is_file():
            continue
        cfg = saved_config(saved)
        estimators = selected_estimators(saved_setting(cfg, "estimator") or {})
        row = {"dataset": job.dataset, "model": job.model,
               "image size": saved_setting(cfg, "dataset.image_size") or "native",
               "epochs": saved_setting(cfg, "trainer.max_epochs"), "lr": saved_setting(cfg, "optim.lr"),
               "test accuracy %": 100 * job.test_accuracy}

        def of(name: str, *keys: str) -> list:
            every = saved_setting(cfg, f"audit.plan.{name}.every_nth", 1)
            return [f"every {every}", *(saved_setting(cfg, f"estimator.{name}.{key}") for key in keys)]

        if "deepfool" in estimators:
            row["deepfool"] = "{}; {} steps, top {}".format(*of("deepfool", "steps", "candidates"))
        if "cw" in estimators:
            row["cw"] = "{}; {} × {} steps".format(*of("cw", "binary_search_steps", "steps"))
        if "fmn" in estimators:
            row["fmn"] = "{}; {} steps".format(*of("fmn", "steps"))
        if "rs" in estimators:
            every, n, n0, sigma, alpha = of("rs", "n", "n0", "sigma", "alpha")
            n = f"{n:,}" if isinstance(n, int) else n
            row["rs"] = f"{every}; N = {n}, N0 = {n0}, σ = {sigma}, α = {alpha}"
        rows.append(row)
    return pd.DataFrame(rows)
