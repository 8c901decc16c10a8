"""``robustness-bias report DIR... --out FOLDER`` (or ``python -m robustness_bias.report``): the paper's tables
and figures from sweeps.

Reads every finished job below the given sweep folders (``multirun/...``) and writes Markdown and
CSV tables and PNG + PDF figures into ``--out``; with ``--wandb`` it logs them to a W&B run too.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from ..records import read_final_records, write_atomic, write_table
from . import figures
from .aft_table import aft_table
from .answer import partition_label
from .findings import findings
from .jobs import collect, find_jobs, originals, single_attributes
from .mitigation import mitigation_groups, mitigation_table
from .paper_tables import agreement_statistics, table1, table2
from .run_tables import estimators_table, settings_table
from .shards import merge_sharded_jobs
from .sigma_tables import adjusted_sigmas, adjusted_table, regularization_table, seeds_table, sigma_table
from .tightness import tightness_tables

PARTS = ("table1", "table2", "estimators", "agreement", "sigma_final", "seeds", "adjusted", "findings", "settings", "regularized",
         "mitigation", "tightness", "aft", "figures")


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table, numbers to 4 significant digits, missing values as '–'."""
    def cell(value):
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    written = []
    for name, frame in tables.items():
        written.append(write_table(frame, out / f"{name}.csv"))
        written.append(write_atomic(out / f"{name}.md", lambda tmp, f=frame: tmp.write_text(markdown(f))))
    return written


def both_formats(path: Path, draw, *args, **kwargs) -> list[Path]:
    """Draw a figure once and save it as PNG and as PDF: ``draw(*args, path, also_pdf=True, **kwargs)``."""
    png = draw(*args, path.with_suffix(".png"), also_pdf=True, **kwargs)
    return [png, png.with_suffix(".pdf")]


def partition_names(accuracy: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Per dataset, what its jobs call their partitions where the column's name does not say it (the class
    is the age bin on UTKFace and Adience): from result.json, where jobs since issue 19 write it."""
    names: dict[str, dict[str, str]] = {}
    for job in accuracy.itertuples():
        result = Path(job.job) / "result.json"
        if result.is_file():
            names.setdefault(job.dataset, {}).update(json.loads(result.read_text()).get("partition_names") or {})
    return names


def write_figures(sigma: pd.DataFrame, accuracy: pd.DataFrame, out: Path) -> list[Path]:
    """Heatmaps from the σ table; distance distributions and survival curves from each job's final records."""
    written, names = [], partition_names(accuracy)
    for (dataset, estimator, partition), _ in sigma.groupby(["dataset", "estimator", "partition"]):
        written += both_formats(out / "figures" / f"heatmap_{dataset}_{estimator}_{partition}", figures.sigma_heatmaps,
                                sigma, dataset, estimator, partition, names=names.get(dataset))
    for dataset, jobs in accuracy.groupby("dataset"):
        finals = [records.assign(model=job.model) for job in jobs.itertuples()
                  if (records := read_final_records(job.job)) is not None]
        if not finals:
            continue
        records = pd.concat(finals, ignore_index=True)
        for partition in dict.fromkeys(sigma.loc[sigma["dataset"] == dataset, "partition"]):
            label = partition_label(partition, names.get(dataset))
            written += both_formats(out / "figures" / f"distances_{dataset}_{partition}", figures.distance_distributions,
                                    records, partition, title=f"{dataset}: distances by {label} (final)",
                                    names=names.get(dataset))
            for model, mine in records.groupby("model"):
                written += both_formats(out / "figures" / f"survival_{dataset}_{model}_{partition}",
                                        figures.survival_figure, mine.drop(columns="model"), partition,
                                        title=f"{dataset}, {model}: survival by {label} (final)",
                                        names=names.get(dataset))
    return written


def write_regularization_figures(table: pd.DataFrame, out: Path) -> list[Path]:
    written = []
    for (dataset, model), rows in table.groupby(["dataset", "model"]):
        written += both_formats(out / "figures" / f"regularized_{dataset}_{model}", figures.regularization_figure, rows,
                                title=f"{dataset}, {model}: regularizer on {rows['target'].iloc[0]}")
    return written


def write_forest_figures(table: pd.DataFrame, accuracy: pd.DataFrame, out: Path) -> list[Path]:
    """A forest plot of the AFT ratios per dataset and partition: ``figures/aft_<dataset>_<partition>``."""
    written, names = [], partition_names(accuracy)
    for (dataset, partition), _ in table.groupby(["dataset", "partition"], sort=False):
        written += both_formats(out / "figures" / f"aft_{dataset}_{partition}", figures.forest_figure, table, dataset,
                                partition, names=names.get(dataset))
    return written


def log_to_wandb(tables: dict[str, pd.DataFrame], images: list[Path], out: Path, project: str, offline: bool) -> None:
    import wandb

    run = wandb.init(project=project, job_type="report", dir=str(out), mode="offline" if offline else "online",
                     name=f"report-{out.name}")
    try:
        run.log({f"report/{name}": wandb.Table(dataframe=frame) for name, frame in tables.items()})
        run.log({f"report/figures/{p.stem}": wandb.Image(str(p)) for p in images if p.suffix == ".png"})
    finally:
        run.finish()


def main(argv: list[str] | None = None, prog: str = "python -m robustness_bias.report") -> dict[str, pd.DataFrame]:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", help="sweep folders, e.g. multirun/utk_race")
    parser.add_argument("--out", default="reports/latest", help="where the tables and figures go")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to build")
    parser.add_argument("--wandb", action="store_true", help="also log the report to Weights & Biases")
    parser.add_argument("--online", action="store_true", help="with --wandb: upload instead of logging offline")
    parser.add_argument("--project", default="robustness_bias")
    parser.add_argument("--adjust-for", nargs="+", metavar="ATTRIBUTE",
                        help="σ adjusted for these attributes (adjusted.md), and the AFT ratios (aft.md), whatever the "
                             "jobs' audit.adjust_for")
    args = parser.parse_args(argv)

    out = Path(args.out)
    try:
        jobs = merge_sharded_jobs(find_jobs(args.sweeps))
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"robustness_bias.report: error: {error}\n")
    sigma, accuracy = collect(jobs)
    paper_cells = single_attributes(originals(sigma))
    builders = {"table1": lambda: table1(paper_cells), "table2": lambda: table2(originals(accuracy)),
                "estimators": lambda: estimators_table(originals(accuracy)),
                "agreement": lambda: agreement_statistics(paper_cells),
                "sigma_final": lambda: sigma_table(originals(sigma)), "seeds": lambda: seeds_table(originals(sigma)),
                "settings": lambda: settings_table(accuracy),
                "regularized": lambda: regularization_table(sigma, accuracy)}
    tables = {name: build() for name, build in builders.items() if name in args.only}
    if "mitigation" in args.only:   # regularized or group-balanced jobs beside the unmitigated job of their model and seed
        tables["mitigation_groups"] = mitigation_groups(sigma, accuracy)
        tables["mitigation"] = mitigation_table(sigma, accuracy, tables["mitigation_groups"])
    if "tightness" in args.only:   # sweeps audited with audit.best=true: σ at DeepFool, CW and the best bound
        tables.update(tightness_tables(paper_cells, originals(accuracy)))
    adjusted = (adjusted_sigmas(originals(accuracy), args.adjust_for)
                if {"adjusted", "findings"} & set(args.only) else None)
    if "adjusted" in args.only and adjusted is not None and len(adjusted):
        tables["adjusted"] = adjusted_table(adjusted)
        tables["adjusted_seeds"] = seeds_table(adjusted, "adjusted_sigma", "adjusted_p_adjusted")
    if "aft" in args.only:   # each group's distance ratio from an AFT fit on the final records, adjusted or not
        tables["aft"] = aft_table(originals(sigma), originals(accuracy), args.adjust_for)
    for name in ("regularized", "mitigation", "mitigation_groups", "settings", "aft"):   # none among these jobs
        if tables.get(name) is not None and tables[name].empty:
            del tables[name]
    written = write_tables(tables, out)
    if "findings" in args.only:   # sentences from the tables, stated only where they hold in every seed
        adjusted_seeds = seeds_table(adjusted, "adjusted_sigma", "adjusted_p_adjusted") if adjusted is not None \
            and len(adjusted) else None
        text = findings(seeds_table(originals(sigma)), originals(sigma), originals(accuracy), partition_names(accuracy),
                        adjusted_seeds, adjusted)
        written.append(write_atomic(out / "findings.md", lambda tmp: tmp.write_text(text)))
        print(f"\n{text}")
    images = write_figures(originals(sigma), originals(accuracy), out) if "figures" in args.only else []
    if "figures" in args.only and "regularized" in tables:
        images += write_regularization_figures(tables["regularized"], out)
    if "figures" in args.only and "aft" in tables:
        images += write_forest_figures(tables["aft"], originals(accuracy), out)
    for name, frame in tables.items():
        print(f"\n## {name}\n\n{markdown(frame)}")
    print(f"{len(jobs)} job(s) read; {len(written) + len(images)} file(s) written to {out}")
    if args.wandb:
        log_to_wandb(tables, images, out, args.project, offline=not args.online)
    return tables

