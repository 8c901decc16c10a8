"""The mitigation's tables (issue 39): each mitigated model beside the unmitigated one of the same dataset, model
and seed. A mitigation is the robustness-bias regularizer (``regularizer=rb``: its target group) or group-balanced
training (``dataset.balance_by``: every group of that attribute).

``mitigation``: one row per mitigated job and estimator: the targeted group's σ with its interval, before and after;
the other groups' σ that moved most (did the gap move elsewhere?); overall accuracy and the worst group's; training
seconds, each beside the unmitigated model's. ``mitigation_groups``: every group of every single-attribute
partition, σ with interval and test accuracy, before and after (the whole picture the first table picks from).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .jobs import originals, single_attributes

CELL = ["estimator", "partition", "group"]


def mitigation_name(job) -> str:
    """How a job's mitigation reads in the tables."""
    if job.target:
        return f"rb {job.target} α={job.alpha:g} τ={job.tau:g}"
    return f"balanced by {job.balance_by}" if job.balance_by else "none"


def targeted(job, partition: str, group: str) -> bool:
    if job.target:
        attribute, target = job.target.split("=", 1)
        return partition == attribute and group == target
    return bool(job.balance_by) and partition == job.balance_by


def unmitigated(accuracy: pd.DataFrame, job) -> pd.DataFrame:
    """The unmitigated job(s) of ``job``'s dataset, model and seed (a job without a seed matches one without)."""
    bases = originals(accuracy)
    seed = bases["seed"].isna() if pd.isna(job.seed) else bases["seed"] == job.seed
    return bases[(bases["dataset"] == job.dataset) & (bases["model"] == job.model) & seed]


def _sigma(value, low, high) -> str:
    """σ and its interval as the table shows them; – where the group had no σ (too few faces)."""
    return "–" if not np.isfinite(value) else f"{value:+.2f} {_interval(low, high)}"


def _interval(low, high) -> str:
    return "–" if not (np.isfinite(low) and np.isfinite(high)) else f"[{low:+.2f}, {high:+.2f}]"


def mitigation_groups(sigma: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Every group's final σ (interval, BH-adjusted p) and test accuracy in each mitigated job and in the
    unmitigated job of the same dataset, model and seed."""
    final = single_attributes(sigma[sigma["epoch_tag"] == "final"]).astype({"group": str})
    rows = []
    for job in accuracy.itertuples():
        if not (job.target or job.balance_by):
            continue
        base = unmitigated(accuracy, job)
        base_job = base.iloc[0] if len(base) else None
        mine = final[final["job"] == job.job].set_index(CELL)
        theirs = final[final["job"] == base_job["job"]].set_index(CELL) if base_job is not None else None
        for cell, row in mine.iterrows():
            estimator, partition, group = cell
            other = theirs.loc[cell] if theirs is not None and cell in theirs.index else None
            accuracy_of = lambda j: 100 * (j or {}).get(partition, {}).get(group, np.nan)  # noqa: E731
            rows.append({"job": job.job, "dataset": job.dataset, "model": job.model, "seed": job.seed,
                         "mitigation": mitigation_name(job),
                         "estimator": estimator, "partition": partition, "group": group,
                         "targeted": targeted(job, partition, group),
                         "σ": row["sigma"], "σ low": row["sigma_low"], "σ high": row["sigma_high"],
                         "p adjusted": row["p_adjusted"],
                         "σ before": other["sigma"] if other is not None else np.nan,
                         "σ before low": other["sigma_low"] if other is not None else np.nan,
                         "σ before high": other["sigma_high"] if other is not None else np.nan,
                         "p adjusted before": other["p_adjusted"] if other is not None else np.nan,
                         "accuracy %": accuracy_of(job.group_accuracy),
                         "accuracy before %": accuracy_of(base_job["group_accuracy"]) if base_job is not None else np.nan})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["Δσ"] = frame["σ"] - frame["σ before"]
        frame = frame.drop(columns="job").assign(job=frame["job"])   # last: a path, for matching, not for reading
        # read by model, each one's mitigations in one order (balanced before rb, small α first), not as found on disk
        frame = frame.sort_values(["dataset", "model", "seed", "mitigation"], kind="stable", ignore_index=True)
    return frame


def mitigation_table(sigma: pd.DataFrame, accuracy: pd.DataFrame, groups: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per mitigated job and estimator: the targeted group(s)' σ before → after with intervals, the other group
    whose σ fell most (where a gap may have moved), overall and worst-group accuracy, and training seconds, each
    beside the unmitigated model of the same dataset, model and seed."""
    groups = mitigation_groups(sigma, accuracy) if groups is None else groups
    if groups.empty:
        return pd.DataFrame()
    rows = []
    for (path, estimator), cells in groups.groupby(["job", "estimator"], sort=False):
        job = next(j for j in accuracy.itertuples() if j.job == path)
        dataset, model, seed, name = job.dataset, job.model, job.seed, mitigation_name(job)
        base = unmitigated(accuracy, job)
        target, rest = cells[cells["targeted"]], cells[~cells["targeted"]]
        shown = "; ".join(f"{r['group']}: {_sigma(r['σ before'], r['σ before low'], r['σ before high'])} → "
                          f"{_sigma(r['σ'], r['σ low'], r['σ high'])}" for _, r in target.iterrows())
        moved = rest.dropna(subset=["Δσ"]).sort_values("Δσ", kind="stable")
        worst = moved.iloc[0] if len(moved) else None
        partitions = sorted(set(target["partition"]))
        worst_group = lambda column: cells[cells["partition"].isin(partitions)][column].min()  # noqa: E731
        rows.append({
            "dataset": dataset, "model": model, "seed": seed, "mitigation": name, "estimator": estimator,
            "targeted: σ before → after [95% interval]": shown or "–",
            "targeted Δσ": float(target["Δσ"].mean()) if len(target) else np.nan,
            "largest fall elsewhere": (f"{worst['partition']}={worst['group']}: {worst['σ before']:+.2f} → "
                                       f"{worst['σ']:+.2f}" if worst is not None else "–"),
            "elsewhere Δσ": float(worst["Δσ"]) if worst is not None else np.nan,
            "accuracy %": 100 * job.test_accuracy,
            "accuracy before %": 100 * base["test_accuracy"].iloc[0] if len(base) else np.nan,
            "worst targeted-partition group accuracy %": worst_group("accuracy %"),
            "before %": worst_group("accuracy before %"),
            "train s": job.train_seconds,
            "train s before": base["train_seconds"].iloc[0] if len(base) else np.nan})
    return pd.DataFrame(rows)
