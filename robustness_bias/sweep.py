"""A sweep's first and last word (a Hydra callback, conf/config.yaml's ``hydra.callbacks``): before its
first job, the pre-flight of every job (robustness_bias/preflight.py); after its last, one line per job.

Both run in the process that launches the jobs, whichever launcher runs them (in this process, in
joblib's workers, as SLURM jobs): the lines are read from the jobs' folders, not from the jobs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .analysis.summary import OVERALL, least_robust
from .records import audit_folder


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra import compose

        from .preflight import PLACEHOLDER_OUTPUT, report, sweep_jobs, sweep_problems

        self.started = time.time()
        params = config.hydra.sweeper.get("params")
        jobs = sweep_jobs(config.hydra.overrides.task, OmegaConf.to_container(params) if params else {})
        problems = sweep_problems(jobs, lambda overrides: compose(config_name="config",
                                                                  overrides=[*overrides, PLACEHOLDER_OUTPUT]))
        if problems:
            report(problems, len(jobs))   # exits: Hydra would turn an exception here into a warning

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        lines = sweep_lines(Path(config.hydra.sweep.dir), self.started)
        if lines:
            print(f"\nsweep {config.hydra.sweep.dir}: {len(lines)} job(s)", *lines, sep="\n  ", flush=True)


def sweep_lines(folder: Path, since: float) -> list[str]:
    """One line per job this sweep started (its ``.hydra/overrides.yaml`` is written when it starts, even
    when it finds its results finished and skips), in the order of the job numbers."""
    jobs = [job for job in folder.iterdir() if (job / ".hydra" / "overrides.yaml").is_file()
            and (job / ".hydra" / "overrides.yaml").stat().st_mtime >= since - 1] if folder.is_dir() else []

    def number(job: Path) -> tuple:
        head = job.name.split("-", 1)[0]
        return (int(head), job.name) if head.isdigit() else (math.inf, job.name)

    return [job_line(job, since) for job in sorted(jobs, key=number)]


def job_line(job: Path, since: float) -> str:
    """``0-logreg  test acc 0.967  least robust class: exact 9 (σ −0.296), …  [skipped: finished before]``."""
    result_file = job / "result.json"
    if not result_file.is_file():
        return f"{job.name}: no result (failed or still running; see {job}/robustness_bias.log)"
    result = json.loads(result_file.read_text())
    text = f"{job.name}: test accuracy {result.get('test_accuracy', math.nan):.3f}"
    summary_file = audit_folder(job, "final") / "summary.parquet"
    partition = result.get("partition")
    if summary_file.is_file() and partition:
        summary = pd.read_parquet(summary_file)
        rows = summary[(summary["partition"] == partition) & (summary["group"] != OVERALL) & summary["sigma"].notna()]
        lowest = [f"{estimator} {least_robust(frame)} (σ {frame['sigma'].min():+.3f})"
                  for estimator, frame in rows.groupby("estimator", sort=False, observed=True)]
        if lowest:
            text += f"; least robust {partition}: " + ", ".join(lowest)
    if result_file.stat().st_mtime < since - 1:
        text += " [finished before: skipped]"
    return text
