"""The finished jobs of one or more sweeps, as the report reads them: found, checked, and gathered into the
tidy σ and accuracy tables every other table of the report is built from.

Reading a job is kept apart from what the tables make of it: a job's files are checked here once, before
any table is written (a damaged one is named with its fix, not met as a traceback deep in a table), and
its saved Hydra config is read here without running any of its resolvers.

:func:`collect` gives the σ table: one row per (dataset, model, estimator, epoch tag, partition, group)
with its σ(P), and the accuracy table: one row per (dataset, model).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..analysis.summary import OVERALL
from ..records import AUDITS, INTERSECTION, audit_folder


def find_jobs(directories: list[str | Path]) -> list[Path]:
    """Every finished job (a folder with result.json) below the given sweep folders, each with the files the
    report reads intact (:func:`check_job`)."""
    jobs = sorted({p.parent for d in directories for p in Path(d).rglob("result.json")})
    if not jobs:
        raise FileNotFoundError(f"no finished jobs (result.json) below {[str(d) for d in directories]}: "
                                "run a sweep first, e.g. python -m robustness_bias +experiment=utk_race")
    for job in jobs:
        check_job(job)
    return jobs


class DamagedJob(ValueError):
    """A finished job's file that the report reads is missing or cannot be read."""


def check_job(job: Path) -> None:
    """Each file of ``job`` the report reads, read before any table is written: result.json, the saved
    config, and the records and summary of each audit result.json lists (and of any other audit there).

    A file cut short (a full disk, a copy that stopped) failed deep in a table as a traceback naming no job.
    A job whose records are gone is refused too, not left out: its σ would stay in the tables while its
    distances left the figures, σ adjusted and the AFT ratios, and the report would exit 0.
    """
    try:
        result = json.loads((job / "result.json").read_text())
    except ValueError as error:   # JSON's errors and a file that is not UTF-8 text
        raise DamagedJob(damaged(job, "result.json", f"is not valid JSON ({error})")) from None
    missing = [key for key in ("dataset", "model", "test_accuracy") if not isinstance(result, dict) or key not in result]
    if missing:
        raise DamagedJob(damaged(job, "result.json", f"lacks {', '.join(missing)}"))
    audits = [folder / name for tag in result.get("audits") or {} for name in ("records.parquet", "summary.parquet")
              for folder in [audit_folder(job, tag)]]
    for path in dict.fromkeys([*audits, *sorted((job / AUDITS).glob("*/*.parquet"))]):
        problem = parquet_problem(path)
        if problem:
            raise DamagedJob(damaged(job, path.relative_to(job), problem))
    saved = job / ".hydra" / "config.yaml"
    if saved.is_file():
        problem = yaml_problem(saved)
        if problem:
            raise DamagedJob(damaged(job, ".hydra/config.yaml", problem))


def damaged(job: Path, name: str | Path, problem: str) -> str:
    """The line for a damaged job: a rerun in its folder would take the job as finished, so the fix starts afresh."""
    overrides = job / ".hydra" / "overrides.yaml"
    where = f" (its overrides are in {overrides})" if overrides.is_file() else ""
    return f"{job}: {name} {problem}. Fix: delete {job} and run that job again{where}, or delete it to report without it"


def parquet_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as Parquet (its footer, which a file cut short lacks), or None."""
    if not path.is_file():   # its σ would stay in the tables, its distances leave the figures and the AFT ratios
        return "is missing" + (", so the job's distances would be left out of the figures, σ adjusted and the AFT "
                               "ratios while its σ stayed in the tables" if path.name == "records.parquet" else "")
    try:
        pq.read_metadata(path)
    except Exception as error:   # pyarrow's ArrowInvalid and OSError alike
        return f"is damaged, cut short or not Parquet ({type(error).__name__})"
    return None


def yaml_problem(path: Path) -> str | None:
    """Why ``path`` is not a config the report can read, or None."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    try:
        saved_config(path)
    except yaml.MarkedYAMLError as error:
        where = f" at line {error.problem_mark.line + 1}" if error.problem_mark else ""
        return f"is not valid YAML ({error.problem}{where})"
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as error:
        return f"is not valid YAML ({str(error).splitlines()[0]})"
    return None


SIGMA_COLUMNS = ["estimator", "epoch_tag", "partition", "group", "attacked", "failures", "capped", "sigma", "sigma_low",
                 "sigma_high", "p_adjusted", "sigma_least", "sigma_most", "flag"]


def collect(jobs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The σ table of every audit of every job, and the accuracy table."""
    sigmas, accuracies = [], []
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        regularizer = result.get("regularizer") or {}
        labels = {"dataset": result["dataset"], "model": result["model"], "seed": result.get("seed"), "job": str(job),
                  "target": f"{regularizer['attribute']}={regularizer['group']}" if regularizer else "",
                  "alpha": regularizer.get("alpha", np.nan), "tau": regularizer.get("tau", np.nan),
                  "balance_by": result.get("balance_by") or ""}
        accuracies.append({**labels, "test_accuracy": result["test_accuracy"],
                           "train_seconds": result.get("train_seconds", np.nan),
                           "group_accuracy": result.get("group_accuracy") or {}})
        for summary in sorted((job / "audits").glob("*/summary.parquet")):
            frame = pd.read_parquet(summary)
            frame = frame[frame["group"] != OVERALL]
            missing = [c for c in SIGMA_COLUMNS if c not in frame]   # summaries written before these existed
            frame = frame.assign(**dict.fromkeys(missing, np.nan))
            sigmas.append(frame[SIGMA_COLUMNS].assign(**labels))
    empty = pd.DataFrame(columns=[*SIGMA_COLUMNS, "dataset", "model", "seed", "job", "target", "alpha", "tau",
                                  "balance_by"])
    sigma = pd.concat(sigmas, ignore_index=True) if sigmas else empty
    sigma["estimator"] = sigma["estimator"].astype(str)
    sigma["flag"] = sigma["flag"].fillna("").astype(str)
    return sigma, pd.DataFrame(accuracies)


def originals(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of models trained without a mitigation (the regularizer, group-balanced batches): the paper's
    tables are about those."""
    plain = frame["target"] == ""
    return frame[plain & (frame["balance_by"] == "")] if "balance_by" in frame else frame[plain]


def single_attributes(sigma: pd.DataFrame) -> pd.DataFrame:
    """The rows of single-attribute partitions: the paper's cells have no intersections (race×gender)."""
    return sigma[~sigma["partition"].astype(str).str.contains(INTERSECTION, regex=False)]


# A value that is only a reference to another setting, as Hydra saves them: ${model.lr}.
_REFERENCE = re.compile(r"\$\{([A-Za-z_][\w-]*(?:\.[\w-]+)*)\}")


def saved_config(path: Path) -> dict:
    """A job's saved Hydra config as plain data, read without calling any resolver.

    Hydra saves interpolations unresolved. References to other settings (``${model.lr}``) are followed
    within the file; a resolver (``${oc.env:SECRET}``) is never called, so a crafted config.yaml cannot
    make the report print an environment variable: such a value stays as its text.
    """
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return tree if isinstance(tree, dict) else {}


def saved_setting(tree: dict, key: str, default=None):
    """The value at the dotted ``key``, references followed to a plain value (at most 10 deep)."""
    value = tree
    for _ in range(10):
        for part in key.split("."):
            value = value.get(part, default) if isinstance(value, dict) else default
        reference = _REFERENCE.fullmatch(value) if isinstance(value, str) else None
        if reference is None:
            return value
        key, value = reference.group(1), tree
    return default
