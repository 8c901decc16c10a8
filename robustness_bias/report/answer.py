"""The answer of a job, as text for the console: its per-group table and where its files are.

A run used to end with one line under W&B's summary dump; the table below is what the audit found, in
the terms of the paper (σ < 0: the group sits closer to the boundary than the rest, i.e. is less robust),
read from the final audit's ``summary.parquet`` as the report reads it.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..analysis.summary import MIN_STRATUM, OVERALL, least_robust

LEAST_ROBUST = "◀ least robust"


def number(value: float, digits: int = 3, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "–" if value is None or math.isnan(value) else ("∞" if value > 0 else "−∞")
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def partition_label(partition: str, names: dict[str, str] | None) -> str:
    """``class (age)`` where the dataset names what its classes are; the column keeps its name ``class``."""
    shown = (names or {}).get(partition)
    return f"{partition} ({shown})" if shown and shown != partition else partition


def percent(share: float) -> str:
    return "–" if share is None or not math.isfinite(share) else f"{100 * share:.0f}%"


def group_table(summary: pd.DataFrame, *, names: dict[str, str] | None = None, min_group_size: int | None = None,
                level: float = 0.95, failures: str = "censor") -> str:
    """Per estimator and partition: each group's size, accuracy, the share of its attacked points the
    estimator failed on (and, for an estimator with a cap, the share at it), median distance, σ with its
    interval and its Benjamini–Hochberg-adjusted p, the least robust group marked; a group without σ says
    why. A σ that rests on failures or capped points carries ⚑ and the band it spans wherever they lie,
    and a line under the block says how σ treats them."""
    interval = f"{round(level * 100)}% interval"
    blocks = []
    for (estimator, partition), rows in summary.groupby(["estimator", "partition"], sort=False, observed=True):
        capped = "cap_share" in rows and bool(rows["capped"].fillna(0).gt(0).any())
        adjusted = "adjusted_for" in rows and bool(rows["adjusted_for"].fillna("").ne("").any())
        header = (f"  {'group':<16} {'size':>5} {'acc':>6} {'fail':>5}" + (f"  {'cap':>5}" if capped else "")
                  + f" {'median':>7} {'σ':>7}  {interval:<18} {'p adj':>6}"
                  + (f"  {'adj. σ':>7}  {interval:<18} {'p adj':>6}" if adjusted else ""))
        lines = [f"{estimator} · {partition_label(str(partition), names)}", header]
        marked = least_robust(rows[rows["group"] != OVERALL])
        for row in rows.itertuples():
            shares = f"{percent(getattr(row, 'failure_share', math.nan)):>5}"
            if capped:
                shares += f"  {percent(row.cap_share):>5}"
            line = f"  {str(row.group)[:16]:<16} {row.size:>5} {number(row.accuracy):>6} {shares} {number(row.median_distance):>7} "
            if row.group == OVERALL:
                lines.append(line.rstrip())
            elif row.too_small or not math.isfinite(row.sigma):
                rule = f" < audit.min_group_size={min_group_size}" if min_group_size else ""
                lines.append(line + f"{'–':>7}  no σ: {row.attacked} correctly classified{rule}")
            else:
                bounds = f"[{number(row.sigma_low, sign=True)}, {number(row.sigma_high, sign=True)}]"
                flag = getattr(row, "flag", "") or ""
                band = (f" band [{number(row.sigma_least, 2, True)}, {number(row.sigma_most, 2, True)}]"
                        if flag and not math.isclose(row.sigma_least, row.sigma_most, abs_tol=5e-3) else "")
                lines.append(line + f"{number(row.sigma, sign=True):>7}  {bounds:<18} {number(row.p_adjusted):>6}"
                             + (adjusted_columns(row) if adjusted else "")
                             + (f"  ⚑{band}" if flag else "")
                             + (f"  {LEAST_ROBUST}" if str(row.group) == marked else ""))
        lines += caveats(rows, str(estimator), failures)
        lines += adjustment_notes(rows) if adjusted else []
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def adjusted_columns(row) -> str:
    """σ adjusted for ``audit.adjust_for``, its interval and adjusted p, beside σ's."""
    bounds = f"[{number(row.adjusted_sigma_low, sign=True)}, {number(row.adjusted_sigma_high, sign=True)}]"
    return f"  {number(row.adjusted_sigma, sign=True):>7}  {bounds:<18} {number(row.adjusted_p_adjusted):>6}"


def adjustment_notes(rows: pd.DataFrame) -> list[str]:
    """What the adjusted σ holds fixed, and each group's strata left out for want of points in the rest."""
    groups = rows[rows["group"] != OVERALL]
    attributes = [a for a in pd.unique(groups["adjusted_for"].fillna("")) if a]
    lines = [f"  adj. σ: the rest reweighted to each group's own mix of {a}" for a in attributes]
    for row in groups[groups["incomparable"].fillna("").ne("")].itertuples():
        lines.append(f"    {row.group}: left out, the rest has fewer than {MIN_STRATUM} there: {row.incomparable}")
    return lines


def caveats(rows: pd.DataFrame, estimator: str, failures: str) -> list[str]:
    """A line for each reason some σ of the block carries ⚑: how many points failed or sat at the cap, how
    σ treated them, and what the band means (docs/design.md, "When σ cannot be trusted")."""
    whole = rows[rows["group"] == OVERALL]
    flags = set(", ".join(rows.get("flag", pd.Series(dtype=str)).fillna("")).replace(" ", "").split(",")) - {""}
    if whole.empty or not flags:
        return []
    whole = whole.iloc[0]
    treated = ("counts as reaching τ_max (audit.failures=censor)" if failures == "censor"
               else "is left out (audit.failures=drop)")
    lines = []
    if "failures" in flags:
        lines.append(f"  ⚑ {estimator} failed on {whole.failures} of {whole.attacked} attacked points "
                     f"({percent(whole.failure_share)}); in σ a failure {treated}")
    if "cap" in flags:
        lines.append(f"  ⚑ {whole.capped} of {whole.attacked} {estimator} distances ({percent(whole.cap_share)}) sit at the "
                     f"largest it can report, {number(whole.cap)}: σ compares areas up to τ_max = {number(whole.tau_max)} "
                     "and sees no difference beyond the cap (more samples raise it)")
    if (rows["sigma_most"] - rows["sigma_least"]).gt(5e-3).any():
        lines.append("    band: σ with each group's failed and capped points at the least and the most they could be")
    return lines


def job_answer(summary: pd.DataFrame, result: dict, names: dict[str, str] | None = None) -> str:
    """What the console shows when a job ends: the final audit's table and where everything was written."""
    settings = result.get("summary_settings") or {}
    significance = settings.get("significance") or {}
    epoch = int(summary["epoch"].iloc[0]) if "epoch" in summary and len(summary) else None
    title = (f"σ(P) per group, final audit{f' (epoch {epoch})' if epoch is not None else ''}; test accuracy "
             f"{number(result.get('test_accuracy'))}. σ < 0: closer to the decision boundary than the rest "
             "(less robust); p adj: permutation test, Benjamini–Hochberg")
    table = group_table(summary, names=names, min_group_size=settings.get("min_group_size"),
                        level=significance.get("level", 0.95), failures=settings.get("failures", "censor"))
    return f"{title}\n\n{table}\n\n{where_the_files_are(Path(result['output_dir']))}"


def where_the_files_are(output_dir: Path) -> str:
    """The job's folder and what lies in it, one line per kind of file."""
    tags = [tag for tag in ("first", "middle", "final") if (output_dir / "audits" / tag).is_dir()]
    rows = [(f"audits/{{{','.join(tags)}}}/", "records.parquet (a row per sample and estimator), summary.csv "
                                                 "and summary.parquet (this table, every column)"),
            ("figures/", "survival curves and σ per group, per audit (PNG)"),
            ("result.json, dataset.json", "headline numbers and settings; the data's split and cleaning")]
    rows += [(log.name, "the job's full log") for log in sorted(output_dir.glob("*.log"))[:1]]
    rows += [(f"wandb/{run.name}/", f"the W&B run, offline (upload: wandb sync {run})")
             for run in sorted((output_dir / "wandb").glob("offline-run-*"))[-1:]]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"files in {output_dir}:", *(f"  {name:<{width}}  {what}" for name, what in rows)])
