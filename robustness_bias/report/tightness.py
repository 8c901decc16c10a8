"""Does the robustness bias survive tighter distances? σ under DeepFool, CW, FMN and the best bound side by side.

DeepFool and CW overstate each sample's distance to the boundary, by amounts that vary from sample
to sample; FMN (Pintor et al. 2021) overstates it less, and the best bound (auditing/best.py) is
the smallest distance any attack found for a sample. If the overstatement differed between
groups, σ would change at the tightest bound. These tables answer it from the final audits of
sweeps whose records hold the ``best`` estimator (``audit.best=true``; ``make tightness``):

- ``tightness_sigma``: σ per (model, partition, group) under each attack and the best bound, with
  the shift of the best bound's σ from DeepFool's and CW's and whether their signs agree;
- ``tightness_agreement``: per pair of estimators, the share of cells whose σ has the same sign,
  the mean and the largest shift, and how many of the cells significant under the first (BH-adjusted
  p < 0.05) stay significant with the same sign under the second;
- ``tightness_distances``: per model and estimator, the median distance and the median, over the
  samples, of the distance ÷ the best bound (how far each attack overstates the tightest bound).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.agreement import CELL, agreement, paired
from ..records import BEST_BOUND as BEST, read_final_records

ATTACKS = ("deepfool", "cw", "fmn")
PAIRS = (("deepfool", BEST), ("cw", BEST), ("fmn", BEST), ("deepfool", "cw"))
LEVEL = 0.05


def has_best(sigma: pd.DataFrame) -> bool:
    return bool((sigma["estimator"] == BEST).any())


def tightness_sigma(sigma: pd.DataFrame) -> pd.DataFrame:
    """σ of every group (final audit) under each attack and the best bound, one row per cell."""
    final = sigma[(sigma["epoch_tag"] == "final") & sigma["estimator"].isin([*ATTACKS, BEST])]
    table = final.pivot_table(index=CELL, columns="estimator", values="sigma", aggfunc="first", dropna=False)
    attacked = final[final["estimator"] == BEST].drop_duplicates(CELL).set_index(CELL)["attacked"]
    table = table.reindex(columns=[name for name in (*ATTACKS, BEST) if name in table.columns])
    table = table[table.get(BEST, pd.Series(np.nan, index=table.index)).notna()]
    rows = pd.DataFrame({"model": table.index.get_level_values("model"),
                         "partition": table.index.get_level_values("partition"),
                         "group": table.index.get_level_values("group").astype(str),
                         "attacked": attacked.reindex(table.index).to_numpy()})
    for name in table.columns:
        rows[f"σ {name}"] = table[name].to_numpy()
    for name in ("deepfool", "cw"):
        if name in table.columns:
            rows[f"best − {name}"] = table[BEST].to_numpy() - table[name].to_numpy()
            rows[f"sign {name} = best"] = np.where(table[name].isna(), "–",
                                                   np.where(np.sign(table[name]) == np.sign(table[BEST]), "yes", "no"))
    rows.insert(0, "dataset", table.index.get_level_values("dataset"))
    return rows.sort_values(["dataset", "partition", "group", "model"], kind="stable").reset_index(drop=True)


def tightness_agreement(sigma: pd.DataFrame) -> pd.DataFrame:
    """Per pair of estimators (final audit): sign agreement of σ, its mean and largest shift, and the cells
    significant under the first that stay significant, with the same sign, under the second."""
    final = sigma[sigma["epoch_tag"] == "final"]
    rows = []
    for left, right in PAIRS:
        pairs = paired(final, (left, "final"), (right, "final"))
        stats = agreement(pairs)
        row = {"comparison": f"{left} vs {right}", "agree": stats["agree"], "cells": stats["cells"],
               "share %": 100 * stats["share"], "mean shift": -stats["mean_difference"]}
        if len(pairs):
            shift = pairs["right"] - pairs["left"]
            worst = shift.abs().idxmax()
            cell = pairs.loc[worst]
            row["largest shift"] = float(shift[worst])
            row["where"] = f"{cell['model']} {cell['partition']}={cell['group']} ({cell['left']:+.3f} → {cell['right']:+.3f})"
        row.update(significance_kept(final, left, right))
        rows.append(row)
    return pd.DataFrame(rows)


def significance_kept(final: pd.DataFrame, left: str, right: str) -> dict:
    """Of the cells whose σ under ``left`` is significant (BH-adjusted p < 0.05), how many are under ``right``
    too, with the same sign."""
    def pick(name):
        chosen = final[final["estimator"] == name].drop_duplicates(CELL).set_index(CELL)
        return chosen[["sigma", "p_adjusted"]]

    both = pick(left).join(pick(right), lsuffix="_l", rsuffix="_r", how="inner").dropna(subset=["sigma_l", "sigma_r"])
    significant = both[both["p_adjusted_l"] < LEVEL]
    kept = (significant["p_adjusted_r"] < LEVEL) & (np.sign(significant["sigma_l"]) == np.sign(significant["sigma_r"]))
    return {"significant (first)": len(significant), "kept": int(kept.sum())}


def tightness_distances(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per job (dataset, model) and estimator of the final audit: attacked samples, success, the median
    distance, the median per-sample ratio to the best bound and how often the estimator is the best
    (ties count for each), over the samples the best bound covers."""
    rows = []
    for job in jobs.itertuples():
        records = read_final_records(job.job)
        if records is None:
            continue
        records = records[records["correct"]]
        if not (records["estimator"] == BEST).any():
            continue
        distance = records.pivot_table(index="sample_index", columns="estimator", values="distance", observed=True)
        best = distance[BEST]
        covered = best.index[np.isfinite(best)]
        for name in [n for n in (*ATTACKS, BEST) if n in distance.columns]:
            mine = records[records["estimator"] == name]
            ratio = (distance.loc[covered, name] / best[covered]).to_numpy()
            rows.append({"dataset": job.dataset, "model": job.model, "estimator": name, "attacked": len(mine),
                         "success %": 100 * mine["success"].mean(), "median L2": float(np.median(mine["distance"])),
                         "median ÷ best": float(np.median(ratio)) if len(ratio) else np.nan,
                         "is best %": 100 * float(np.mean(ratio <= 1 + 1e-9)) if len(ratio) else np.nan})
    return pd.DataFrame(rows)


def tightness_tables(sigma: pd.DataFrame, accuracy: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The three tables, or none when no job's records hold the best bound."""
    if not has_best(sigma):
        return {}
    return {"tightness_sigma": tightness_sigma(sigma), "tightness_agreement": tightness_agreement(sigma),
            "tightness_distances": tightness_distances(accuracy)}
