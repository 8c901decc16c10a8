"""The report's findings, written from its tables rather than by hand: what the σ of the final audits say
across every seed a model was trained with, and nothing they do not.

Prose written beside tables drifts from them (issue 33 found a results page claiming a group least
robust "in all four models and by every estimator" while its own table showed otherwise). Here every
sentence is built from :func:`~robustness_bias.report.sigma_tables.seeds_table`: a finding is stated only
where it holds in every seed, and a σ that rests on failed or capped points (its ``flag``) says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.summary import least_robust
from .answer import partition_label
from .sigma_tables import CELL


def _where(cells: pd.DataFrame) -> str:
    """``model (estimator σ … ⚑; …)`` for each model of ``cells``, rows of the seeds table."""
    parts = []
    for model, mine in cells.groupby("model", sort=True):
        values = [f"{r['estimator']} {r['σ min']:+.2f}" + (f" to {r['σ max']:+.2f}" if r["seeds"] > 1 else "")
                  + (" ⚑" if r["flagged"] else "") for r in mine.to_dict("records")]
        parts.append(f"{model} ({'; '.join(values)})")
    return ", ".join(parts)


def significant_findings(table: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """A line per group whose σ is significant with one sign in every seed, with the cells where it is."""
    held = table[table["significant in every seed"]]
    lines = []
    for (partition, group), cells in held.groupby(["partition", "group"], sort=True):
        for direction, side in (("less", cells[cells["σ mean"] < 0]), ("more", cells[cells["σ mean"] > 0])):
            if len(side):
                lines.append(f"- {partition_label(partition, names)} = {group}: {direction} robust than the rest in "
                             f"{_where(side)}")
    return lines


def least_robust_findings(table: pd.DataFrame, sigma: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """Per partition: which group has the lowest σ in every seed, per model and estimator, and where the
    least robust group changes from seed to seed."""
    final = sigma[(sigma["epoch_tag"] == "final") & sigma["sigma"].notna()].astype({"group": str})
    lines = []
    for partition, rows in final.groupby("partition", sort=True):
        same, varies = {}, []
        for (model, estimator), cells in rows.groupby(["model", "estimator"], sort=True):
            lowest = pd.Series([least_robust(job) for _, job in cells.groupby("job")])   # per trained model
            if lowest.nunique() == 1:
                same.setdefault(lowest.iloc[0], []).append(f"{model} by {estimator}")
            else:
                varies.append(f"{model} by {estimator} ({', '.join(sorted(lowest.unique()))})")
        label = partition_label(partition, names)
        for group, where in sorted(same.items()):
            lines.append(f"- by {label}, {group} is the least robust group in every seed for {', '.join(where)}")
        if varies:
            lines.append(f"- by {label}, the least robust group changes between seeds for {'; '.join(varies)}")
    return lines


def agreement_finding(table: pd.DataFrame) -> str | None:
    """How many (model, partition, group) cells measured by two or more estimators have one sign under all of
    them in every seed."""
    cells = table.groupby(["model", "partition", "group"], sort=True)
    measured = [(cell, rows) for cell, rows in cells if len(rows) > 1]
    if not measured:
        return None
    agree = sum(bool(rows["sign holds"].all() and np.sign(rows["σ mean"]).nunique() == 1) for _, rows in measured)
    return (f"- the estimators' signs agree in every seed in {agree} of {len(measured)} cells (model × group) that two "
            "or more estimators measured")


def adjusted_findings(table: pd.DataFrame, adjusted: pd.DataFrame, attributes: pd.DataFrame,
                      names: dict[str, str]) -> list[str]:
    """For each cell significant in every seed (``table``), whether it still is once adjusted for the other
    attributes (``adjusted``: the seeds table of the adjusted σ; ``attributes``: what each was adjusted for)."""
    held = table[table["significant in every seed"]].set_index(CELL)
    after = adjusted.set_index(CELL)
    lines = []
    for (partition, group), cells in held.groupby(["partition", "group"], sort=True):
        mine = attributes[(attributes["partition"] == partition)]
        if mine.empty or not len(after):
            continue
        kept, lost = [], []
        for cell, row in cells.iterrows():
            adjusted_row = after.loc[cell] if cell in after.index else None
            model, estimator = cell[1], cell[2]
            if adjusted_row is not None and adjusted_row["significant in every seed"] \
                    and np.sign(adjusted_row["σ mean"]) == np.sign(row["σ mean"]):
                kept.append(f"{model} by {estimator} ({adjusted_row['σ min']:+.2f} to {adjusted_row['σ max']:+.2f})")
            else:
                shown = "no adjusted σ" if adjusted_row is None else \
                    f"{adjusted_row['σ min']:+.2f} to {adjusted_row['σ max']:+.2f}"
                lost.append(f"{model} by {estimator} ({shown})")
        label = f"{partition_label(partition, names)} = {group}, adjusted for {mine['adjusted for'].iloc[0]}"
        if kept:
            lines.append(f"- {label}: still significant with the same sign in every seed in {', '.join(kept)}")
        if lost:
            lines.append(f"- {label}: not significant in every seed once adjusted in {', '.join(lost)}")
    return lines


def findings(table: pd.DataFrame, sigma: pd.DataFrame, accuracy: pd.DataFrame,
             names: dict[str, dict[str, str]] | None = None, adjusted: pd.DataFrame | None = None,
             adjusted_sigma: pd.DataFrame | None = None) -> str:
    """The findings page (Markdown): per dataset, the significant groups, the least robust groups and the
    estimators' agreement, each holding in every seed, whether the significant ones survive adjusting for the
    other attributes (``adjusted``: the seeds table of σ adjusted; ``adjusted_sigma``: its rows, from
    :func:`~robustness_bias.report.sigma_tables.adjusted_sigmas`), then what was left unstated and why."""
    names = names or {}
    out = ["# Findings", "",
           "Written by the report from its tables (seeds.csv, sigma_final.csv): a finding is stated only where it "
           f"holds in every seed. Significant: Benjamini–Hochberg-adjusted permutation p < 0.05 with the same sign "
           "in every seed. σ ranges are over the seeds; ⚑: in some seed σ rests on failed attacks or capped radii "
           "(read it with its band in sigma_final.md)."]
    for dataset, jobs in accuracy.groupby("dataset", sort=True):   # every dataset, those without a σ too
        rows = table[table["dataset"] == dataset]
        seeds = sorted({str(s) for s in jobs["seed"].dropna()}) if "seed" in jobs else []
        mine = names.get(dataset, {})
        out += ["", f"## {dataset}", "",
                f"{len(jobs)} trained models: {', '.join(sorted(jobs['model'].unique()))}, "
                f"{'trained with seeds ' + ', '.join(seeds) if seeds else 'one seed each'}; test accuracy "
                + "; ".join(f"{model} {100 * acc.min():.1f}–{100 * acc.max():.1f}%"
                            for model, acc in jobs.groupby("model", sort=True)["test_accuracy"]) + ".", ""]
        significant = significant_findings(rows, mine)
        out += ["**Significant in every seed**", "", *(significant or ["- none"]), ""]
        least = least_robust_findings(rows, sigma[sigma["dataset"] == dataset], mine)
        out += ["**Least robust groups**", "", *(least or ["- no group has a σ"]), ""]
        if adjusted is not None and len(adjusted):
            kinds = adjusted_sigma[adjusted_sigma["dataset"] == dataset].rename(columns={"adjusted_for": "adjusted for"})
            survived = adjusted_findings(rows, adjusted[adjusted["dataset"] == dataset],
                                         kinds.drop_duplicates("partition")[["partition", "adjusted for"]], mine)
            out += ["**Adjusted for the other attributes** (adjusted.md: the rest reweighted to the group's own mix)",
                    "", *(survived or ["- no significant finding was adjusted"]), ""]
        agreement = agreement_finding(rows)
        if agreement:
            out += ["**Estimators**", "", agreement, ""]
        some = rows[~rows["significant in every seed"] & rows["sign holds"] & (rows["seeds"] > 1)]
        flipped = rows[~rows["sign holds"]]
        out += ["**Not stated**", "",
                f"- {len(flipped)} of {len(rows)} cells (model × estimator × group) change sign, or lose σ, between "
                f"seeds; {len(some)} more keep their sign but are not significant in every seed (seeds.md)."]
    return "\n".join(out) + "\n"
