"""σ per group across the report's jobs: the final σ with its interval and flag, how it holds across the
seeds a model was trained with, σ adjusted for other attributes, and σ of a regularized model's target group
beside its original's.

These are the tables the findings are written from (report/findings.py reads :data:`CELL` and
:func:`seeds_table`'s columns), so what counts as one cell and as significant is fixed here. Every function
takes the σ or accuracy table of :func:`~robustness_bias.report.jobs.collect`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.summary import OVERALL, summarize
from ..records import read_final_records
from .jobs import SIGMA_COLUMNS, originals

log = logging.getLogger(__name__)


def regularization_table(sigma: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Each regularized model beside its original: accuracy and σ of the target group (final audit)."""
    final = sigma[sigma["epoch_tag"] == "final"]
    original_accuracy, original_final = originals(accuracy), originals(final)
    rows = []
    for job in accuracy[accuracy["target"] != ""].itertuples():
        attribute, group = job.target.split("=", 1)
        original_acc = original_accuracy[(original_accuracy["dataset"] == job.dataset)
                                         & (original_accuracy["model"] == job.model)]
        row = {"dataset": job.dataset, "model": job.model, "target": job.target, "alpha": job.alpha, "tau": job.tau,
               "accuracy %": 100 * job.test_accuracy,
               "original accuracy %": 100 * original_acc["test_accuracy"].mean() if len(original_acc) else np.nan}
        target = final[(final["partition"] == attribute) & (final["group"].astype(str) == group)]
        base_target = original_final[(original_final["partition"] == attribute)
                                     & (original_final["group"].astype(str) == group)]
        for estimator in sorted(target["estimator"].unique()):
            mine = target[(target["job"] == job.job) & (target["estimator"] == estimator)]["sigma"]
            base = base_target[(base_target["dataset"] == job.dataset) & (base_target["model"] == job.model)
                               & (base_target["estimator"] == estimator)]
            row[f"σ {estimator}"] = float(mine.mean()) if len(mine) else np.nan
            row[f"original σ {estimator}"] = float(base["sigma"].mean()) if len(base) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def sigma_table(sigma: pd.DataFrame) -> pd.DataFrame:
    """σ(P) of every group at the final audit, with its bootstrap interval, BH-adjusted p-value, failures and
    capped points, its flag and band: the numbers behind the heatmaps, one row per (dataset, model, seed,
    estimator, partition, group)."""
    final = sigma[(sigma["epoch_tag"] == "final") & sigma["sigma"].notna()]
    final = final.sort_values(["dataset", "partition", "group", "estimator", "model", "seed"], kind="stable")
    return pd.DataFrame({"dataset": final["dataset"], "partition": final["partition"], "group": final["group"].astype(str),
                         "estimator": final["estimator"], "model": final["model"], "seed": final["seed"],
                         "attacked": final["attacked"], "failed": final["failures"], "capped": final["capped"],
                         "σ": final["sigma"], "σ low": final["sigma_low"], "σ high": final["sigma_high"],
                         "p adjusted": final["p_adjusted"], "flag": final["flag"], "σ least": final["sigma_least"],
                         "σ most": final["sigma_most"]}).reset_index(drop=True)


SIGNIFICANT = 0.05   # BH-adjusted p below which a σ counts as significant in the report's findings
CELL = ["dataset", "model", "estimator", "partition", "group"]


def seeds_table(sigma: pd.DataFrame, value: str = "sigma", p_value: str = "p_adjusted") -> pd.DataFrame:
    """Per cell (dataset, model, estimator, partition, group) of the final audits, σ across the jobs that
    trained the model with different seeds: each seed's σ, their mean and range, whether the sign holds
    in every seed, and whether σ is significant (BH-adjusted p < 0.05) with that sign in every seed. A
    seed where the group had no σ breaks both. ``value``/``p_value``: the columns read as σ and its p
    (``adjusted_sigma``/``adjusted_p_adjusted`` for σ adjusted for other attributes)."""
    final = sigma[sigma["epoch_tag"] == "final"].astype({"group": str})
    rows = []
    for cell, runs in final.groupby(CELL, sort=True, observed=True):
        runs = runs.sort_values("seed", kind="stable")
        values, p = runs[value].to_numpy(float), runs[p_value].to_numpy(float)
        if not np.isfinite(values).any():
            continue
        signs = np.sign(values)
        holds = bool(np.isfinite(values).all() and (signs == signs[0]).all() and signs[0] != 0)
        rows.append({**dict(zip(CELL, cell)), "seeds": len(runs),
                     "σ by seed": ", ".join("–" if np.isnan(v) else f"{v:+.3f}" for v in values),
                     "σ mean": float(np.nanmean(values)), "σ min": float(np.nanmin(values)),
                     "σ max": float(np.nanmax(values)), "sign holds": holds,
                     "significant in every seed": holds and bool((p < SIGNIFICANT).all()),
                     "flagged": ", ".join(sorted(set(", ".join(runs["flag"]).replace(" ", "").split(",")) - {""}))})
    return pd.DataFrame(rows, columns=[*CELL, "seeds", "σ by seed", "σ mean", "σ min", "σ max", "sign holds",
                                       "significant in every seed", "flagged"]).astype(
        {"sign holds": bool, "significant in every seed": bool})   # bool also where no cell has a σ


ADJUSTED_COLUMNS = ["adjusted_for", "adjusted_sigma", "adjusted_sigma_low", "adjusted_sigma_high", "adjusted_p_adjusted",
                    "incomparable"]


def adjusted_sigmas(accuracy: pd.DataFrame, adjust_for: list[str] | None = None) -> pd.DataFrame:
    """Each job's final audit summarized again with σ adjusted for ``adjust_for`` (None: the job's own
    ``audit.adjust_for``), so that sweeps run without it can still be read adjusted: rows as :func:`collect`'s,
    with the adjusted columns, for the groups of partitions that were adjusted. A job whose records lack an
    attribute is skipped with a warning naming it."""
    frames = []
    for job in accuracy.itertuples():
        settings = json.loads((Path(job.job) / "result.json").read_text()).get("summary_settings") or {}
        attributes = list(settings.get("adjust_for") or []) if adjust_for is None else list(adjust_for)
        records = read_final_records(job.job) if attributes and settings else None
        if records is None:
            continue
        missing = [a for a in attributes if a not in records]
        if missing:
            log.warning("%s: no σ adjusted for %s, which its records lack", job.job, missing)
            continue
        summary = summarize(records, {**settings, "adjust_for": attributes}).assign(epoch_tag="final")
        summary = summary[(summary["group"] != OVERALL) & summary["adjusted_for"].fillna("").ne("")]
        frames.append(summary[[*SIGMA_COLUMNS, *ADJUSTED_COLUMNS]].assign(
            dataset=job.dataset, model=job.model, seed=job.seed, job=job.job, target=job.target))
    columns = [*SIGMA_COLUMNS, *ADJUSTED_COLUMNS, "dataset", "model", "seed", "job", "target"]
    adjusted = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return adjusted.astype({"estimator": str, "flag": str})


def adjusted_table(adjusted: pd.DataFrame) -> pd.DataFrame:
    """σ beside σ adjusted for other attributes, with both intervals and p-values and the strata left out: one
    row per (dataset, model, seed, estimator, partition, group) of the final audits."""
    rows = adjusted[adjusted["sigma"].notna()].sort_values(["dataset", "partition", "group", "estimator", "model",
                                                            "seed"], kind="stable")
    return pd.DataFrame({"dataset": rows["dataset"], "partition": rows["partition"], "group": rows["group"].astype(str),
                         "estimator": rows["estimator"], "model": rows["model"], "seed": rows["seed"],
                         "attacked": rows["attacked"], "σ": rows["sigma"], "σ low": rows["sigma_low"],
                         "σ high": rows["sigma_high"], "p adjusted": rows["p_adjusted"],
                         "adjusted for": rows["adjusted_for"], "adj. σ": rows["adjusted_sigma"],
                         "adj. σ low": rows["adjusted_sigma_low"], "adj. σ high": rows["adjusted_sigma_high"],
                         "adj. p adjusted": rows["adjusted_p_adjusted"],
                         "left out": rows["incomparable"].fillna("")}).reset_index(drop=True)
