"""The paper's tables, and its agreement statistics of §7.1, §7.2 and §8.1, from the summaries of one or more sweeps.

Every function takes the tidy σ table of :func:`collect`: one row per (dataset, model,
estimator, epoch tag, partition, group) with its σ(P), and the accuracy table: one row per
(dataset, model). Sign agreement compares σ of two estimators (or two epochs) on the same
trained model and group; cells where either σ is undefined are left out.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..analysis.agreement import agreement, paired
from ..analysis.aft import aft_ratios
from ..analysis.summary import OVERALL, summarize
from ..records import AUDITS, audit_folder, read_final_records

log = logging.getLogger(__name__)

# The paper's values, printed beside ours.
PAPER_TABLE1 = {"adience": (83.33, 79.63), "utkface": (74.24, 72.73), "cifar10": (75.00, 76.67),
                "cifar100": (53.83, 54.00), "cifar100super": (65.83, 66.67)}
PAPER_TABLE2 = {
    "adience": {"adience_classifier": 48.80, "resnet50": 49.75, "alexnet": 46.04, "vgg19_bn": 51.41,
                "densenet121": 50.80, "squeezenet1_0": 49.49},
    "utkface": {"utk_classifier": 66.25, "resnet50": 69.82, "alexnet": 68.09, "vgg19_bn": 69.89,
                "densenet121": 69.15, "squeezenet1_0": 70.73},
    "cifar10": {"deep_cnn": 86.97, "pyramidnet": 86.92, "resnet50": 83.26, "alexnet": 92.08, "vgg19_bn": 89.53,
                "densenet121": 85.17, "squeezenet1_0": 76.97},
    "cifar100": {"deep_cnn_cifar100": 59.60, "pyramidnet_bottleneck": 56.42, "resnet50": 55.81, "alexnet": 71.31,
                 "vgg19_bn": 64.39, "densenet121": 61.05, "squeezenet1_0": 40.36},
    "cifar100super": {"deep_cnn_cifar100": 71.78, "pyramidnet_bottleneck": 67.55, "resnet50": 67.27,
                      "alexnet": 80.70, "vgg19_bn": 76.06, "densenet121": 71.22, "squeezenet1_0": 55.16},
}
PAPER_STATS = {
    "7.1 exact vs deepfool": "125 of 151 (83%); mean 0.17, variance 0.07",
    "7.1 exact vs cw": "125 of 151 (83%); mean 0.19, variance 0.06",
    "7.2 deepfool vs cw": "708 of 755 (94%)",
    "7.2 deepfool first vs final": "637 of 755",
    "7.2 cw first vs final": "621 of 755",
    "7.2 deepfool middle vs final": "671 of 755",
    "7.2 cw middle vs final": "665 of 755",
    "8.1 exact vs rs": "101 of 151 (66.9%)",
}


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
                  "alpha": regularizer.get("alpha", np.nan), "tau": regularizer.get("tau", np.nan)}
        accuracies.append({**labels, "test_accuracy": result["test_accuracy"]})
        for summary in sorted((job / "audits").glob("*/summary.parquet")):
            frame = pd.read_parquet(summary)
            frame = frame[frame["group"] != OVERALL]
            missing = [c for c in SIGMA_COLUMNS if c not in frame]   # summaries written before these existed
            frame = frame.assign(**dict.fromkeys(missing, np.nan))
            sigmas.append(frame[SIGMA_COLUMNS].assign(**labels))
    empty = pd.DataFrame(columns=[*SIGMA_COLUMNS, "dataset", "model", "seed", "job", "target", "alpha", "tau"])
    sigma = pd.concat(sigmas, ignore_index=True) if sigmas else empty
    sigma["estimator"] = sigma["estimator"].astype(str)
    sigma["flag"] = sigma["flag"].fillna("").astype(str)
    return sigma, pd.DataFrame(accuracies)


def originals(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of models trained without the regularizer: the paper's tables are about those."""
    return frame[frame["target"] == ""]


def single_attributes(sigma: pd.DataFrame) -> pd.DataFrame:
    """The rows of single-attribute partitions: the paper's cells have no intersections (race×gender)."""
    return sigma[~sigma["partition"].astype(str).str.contains("×")]


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


def table1(sigma: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: the share (%) of cells where sign σ_RS agrees with sign σ_DF, and with σ_CW (final)."""
    rows = []
    for dataset, frame in sigma.groupby("dataset"):
        df = agreement(paired(frame, ("rs", "final"), ("deepfool", "final")))
        cw = agreement(paired(frame, ("rs", "final"), ("cw", "final")))
        paper = PAPER_TABLE1.get(dataset, (np.nan, np.nan))
        rows.append({"dataset": dataset, "rs~deepfool %": 100 * df["share"], "cells (deepfool)": df["cells"],
                     "paper rs~deepfool %": paper[0], "rs~cw %": 100 * cw["share"], "cells (cw)": cw["cells"],
                     "paper rs~cw %": paper[1]})
    return pd.DataFrame(rows)


def table2(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per dataset × model, beside the paper's."""
    rows = [{"dataset": r.dataset, "model": r.model, "accuracy %": 100 * r.test_accuracy,
             "paper %": PAPER_TABLE2.get(r.dataset, {}).get(r.model, np.nan)}
            for r in accuracy.sort_values(["dataset", "model"]).itertuples()]
    return pd.DataFrame(rows)


def agreement_statistics(sigma: pd.DataFrame) -> pd.DataFrame:
    """§7.1, §7.2 and §8.1: sign agreement between estimators and between epochs."""
    linear = sigma[sigma["model"] == "logreg"]
    comparisons = {
        "7.1 exact vs deepfool": (linear, ("exact", "final"), ("deepfool", "final")),
        "7.1 exact vs cw": (linear, ("exact", "final"), ("cw", "final")),
        "7.2 deepfool vs cw": (sigma, ("deepfool", "final"), ("cw", "final")),
        "7.2 deepfool first vs final": (sigma, ("deepfool", "first"), ("deepfool", "final")),
        "7.2 cw first vs final": (sigma, ("cw", "first"), ("cw", "final")),
        "7.2 deepfool middle vs final": (sigma, ("deepfool", "middle"), ("deepfool", "final")),
        "7.2 cw middle vs final": (sigma, ("cw", "middle"), ("cw", "final")),
        "8.1 exact vs rs": (linear, ("exact", "final"), ("rs", "final")),
    }
    rows = [{"comparison": name, **agreement(paired(frame, left, right)), "paper": PAPER_STATS[name]}
            for name, (frame, left, right) in comparisons.items()]
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
        estimators = [name for name, spec in (saved_setting(cfg, "estimator") or {}).items()
                      if isinstance(spec, dict) and "_target_" in spec]
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
