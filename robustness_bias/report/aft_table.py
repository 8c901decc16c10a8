"""The report's model view of each group: its distance ratio to the rest from an AFT fit on each job's final
records (analysis/aft.py), adjusted for other attributes or not.

The fit itself is analysis/aft.py's; this module chooses, per job, which records, partitions and adjusting
attributes it fits, and names the columns as the report's other tables do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ..analysis.aft import aft_ratios
from ..records import read_final_records

log = logging.getLogger(__name__)

# The AFT table's columns, as the report names them (analysis/aft.py's, spelled as sigma_final's are).
AFT_NAMES = {"adjusted_for": "adjusted for", "ratio_low": "ratio low", "ratio_high": "ratio high",
             "p_value": "p value"}
AFT_COLUMNS = ["dataset", "model", "seed", "estimator", "partition", "group", "adjusted for", "n", "events", "censored",
               "ratio", "ratio low", "ratio high", "p value", "reason", "job"]


def job_adjust_for(job: str | Path) -> list[str]:
    """The attributes a job's AFT view adjusts for: its ``audit.adjust_for``, which result.json keeps among
    the summary settings; none for a job written before the setting existed."""
    settings = json.loads((Path(job) / "result.json").read_text()).get("summary_settings") or {}
    return list(settings.get("adjust_for") or [])


def aft_table(sigma: pd.DataFrame, accuracy: pd.DataFrame, adjust_for: list[str] | None = None) -> pd.DataFrame:
    """Each group's distance ratio to the rest from an AFT fit on each job's final records
    (analysis/aft.py), for the partitions of the job's σ table: adjusted for ``adjust_for`` (the report's
    ``--adjust-for``) or, where None, each job's own :func:`job_adjust_for`. A job without records is left
    out; one whose records lack an adjusting attribute too, with a warning. One row per (dataset, model,
    seed, estimator, partition, group) and job (its folder's name: two experiments may train the same model
    with the same seed), a group without a ratio saying why."""
    frames = []
    for job in accuracy.itertuples():
        records = read_final_records(job.job)
        if records is None:
            continue
        attributes = job_adjust_for(job.job) if adjust_for is None else list(adjust_for)
        partitions = [p for p in dict.fromkeys(sigma.loc[sigma["job"] == job.job, "partition"]) if p in records]
        missing = [name for name in attributes if name not in records]
        if missing:
            log.warning("no AFT ratios for %s: its records have no attribute %s to adjust for (its partitions: %s)",
                        job.job, ", ".join(missing), ", ".join(partitions))
            continue
        frames.append(aft_ratios(records, partitions, attributes).assign(dataset=job.dataset, model=job.model,
                                                                         seed=job.seed, job=Path(job.job).name))
    if not frames:
        return pd.DataFrame(columns=AFT_COLUMNS)
    table = pd.concat(frames, ignore_index=True).sort_values(["dataset", "partition", "group", "estimator", "model",
                                                              "seed"], kind="stable")
    return table.rename(columns=AFT_NAMES)[AFT_COLUMNS].reset_index(drop=True)
