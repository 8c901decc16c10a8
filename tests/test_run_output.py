"""What a job shows: its per-group table at the end, each log line once, no library chatter, training's own
speed on the epoch bar; the σ figure's intervals and the reason a group has no bar."""

import io
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from tqdm import tqdm

from robustness_bias.console import ConsoleHandler
from robustness_bias.report.answer import LEAST_ROBUST, group_table
from robustness_bias.report.figures import sigma_figure
from robustness_bias.training.progress import exclude_from_epoch_bar


def summary_of(rows) -> pd.DataFrame:
    columns = ["estimator", "partition", "group", "size", "accuracy", "attacked", "median_distance", "sigma",
               "sigma_low", "sigma_high", "p_adjusted", "too_small"]
    return pd.DataFrame(rows, columns=columns).assign(epoch=6)


SUMMARY = summary_of([
    ("deepfool", "class", "(all)", 323, 0.50, 161, 0.40, np.nan, np.nan, np.nan, np.nan, False),
    ("deepfool", "class", "0-14", 100, 0.60, 60, 0.50, 0.10, 0.02, 0.18, 0.03, False),
    ("deepfool", "class", "15-24", 40, 0.05, 2, 0.20, np.nan, np.nan, np.nan, np.nan, True),
    ("deepfool", "class", "25-44", 183, 0.54, 99, 0.30, -0.20, -0.31, -0.09, 0.01, False),
    ("deepfool", "race", "(all)", 323, 0.50, 161, 0.40, np.nan, np.nan, np.nan, np.nan, False),
    ("deepfool", "race", "white", 200, 0.55, 110, 0.41, 0.05, -0.01, 0.12, 0.40, False),
    ("deepfool", "race", "black", 123, 0.41, 51, 0.38, -0.07, -0.15, 0.01, 0.40, False),
])


def test_the_table_names_each_partition_marks_the_least_robust_group_and_says_why_one_has_no_sigma():
    text = group_table(SUMMARY, names={"class": "age"}, min_group_size=5)
    blocks = text.split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == ["deepfool · class (age)", "deepfool · race"]
    age = {line.split()[0]: line for line in blocks[0].splitlines()[2:]}
    assert age["25-44"].split()[5:9] == ["-0.200", "[-0.310,", "-0.090]", "0.010"] and age["25-44"].endswith(LEAST_ROBUST)
    assert "no σ: 2 correctly classified < audit.min_group_size=5" in age["15-24"]
    assert LEAST_ROBUST not in age["0-14"] and LEAST_ROBUST not in age["15-24"]
    race = {line.split()[0]: line for line in blocks[1].splitlines()[2:]}
    assert race["black"].endswith(LEAST_ROBUST) and not race["white"].endswith(LEAST_ROBUST)


def test_the_sigma_figure_draws_each_interval_and_writes_why_a_group_has_no_bar():
    figure = sigma_figure(SUMMARY, None, names={"class": "age"}, min_group_size=5)
    ages, races = figure.axes[:2]
    assert ages.get_title() == "σ(P) by class (age)"
    assert [text.get_text().strip() for text in ages.texts] == ["no σ: 2 of 40 correct"]
    [bars] = [c for c in ages.containers if hasattr(c, "patches")]
    assert sorted(round(bar.get_height(), 3) for bar in bars) == [-0.2, 0.1]
    [whiskers] = [c for c in ages.collections if len(c.get_segments()) == 2]   # one line per interval
    assert sorted(tuple(np.round(sorted(s[:, 1]), 3)) for s in whiskers.get_segments()) == [(-0.31, -0.09), (0.02, 0.18)]
    assert not races.texts and "audit.min_group_size=5" in figure.texts[-1].get_text()


def test_the_epoch_bar_divides_by_training_time_only():
    bar = tqdm(total=20, file=io.StringIO(), mininterval=0)
    bar.n = 20
    bar.start_t -= 101   # one second of training, then a hundred of auditing
    exclude_from_epoch_bar(SimpleNamespace(progress_bar_callback=SimpleNamespace(train_progress_bar=bar)), 100)
    assert bar.format_dict["elapsed"] == pytest.approx(1, abs=0.5)
    exclude_from_epoch_bar(SimpleNamespace(progress_bar_callback=None), 100)   # no bar: nothing to do


def test_a_log_line_never_starts_at_the_end_of_a_live_progress_bar():
    """The console's handler clears the bars, writes the line at the start of its own line, then draws the bars
    again: a line logged during an audit no longer reads ``audit · deepfool:  30%|███ | 3/10 13:05:01 …``."""
    out = io.StringIO()
    bar = tqdm(total=10, file=out, mininterval=0, desc="audit · deepfool")
    bar.update(3)
    handler = ConsoleHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(logging.LogRecord("robustness_bias", logging.INFO, __file__, 1, "a log line", None, None))
    before, after = out.getvalue().split("a log line\n")
    assert before.rstrip(" ").endswith("\r") and "3/10" in before   # the bar was there, and was cleared
    assert "3/10" in after   # and is drawn again below the line
    bar.close()


@pytest.mark.slow
def test_a_redirected_job_prints_its_table_and_less_than_a_screen_besides(tmp_path):
    """As ``make run > out.txt`` on a machine with SLURM installed: no progress bars, a line per epoch and per
    audit, W&B's four lines, no line of Lightning's twice, no notices (nor its ``srun`` hint), no smoothing
    probe's rates, then the table; Lightning's notices and the probe's rates are in the log file."""
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "srun").write_text("#!/bin/sh\n")
    (bin_folder / "srun").chmod(0o755)
    done = subprocess.run([sys.executable, "-m", "robustness_bias", "estimator=[exact,deepfool,rs]", "trainer.max_epochs=2",
                           "audit.significance.resamples=50", "audit.significance.permutations=50", "estimator.rs.n=50",
                           "estimator.rs.n0=10", f"hydra.run.dir={tmp_path}"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "WANDB_SILENT": "false", "PATH": f"{bin_folder}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stdout[-3000:]
    before, title, table = done.stdout.partition("σ(P) per group, final audit (epoch 2)")
    assert title and "exact · class\n" in table and "deepfool · class\n" in table
    assert table.count(LEAST_ROBUST) == 3 and f"files in {tmp_path}" in table
    lines = before.splitlines()
    assert len(lines) <= 12, before
    assert sum("epoch 1/2: 20 batches in" in line for line in lines) == 1
    assert sum("audit first+middle (epoch 1): exact 337 images, deepfool 337 images, rs " in line
               for line in lines) == 1
    for chatter in ("INFO:", "lightning", "LeafSpec", "litlogger", "weights_only", "Run summary", "Run history",
                    "anonymous", "it/s]", "Traceback", "srun", "images/s"):
        assert chatter not in done.stdout, chatter
    log = (tmp_path / "robustness_bias.log").read_text()
    assert "GPU available" in log and log.count("GPU available") == 1 and "σ(P) per group" in log
    assert "rs: forward batch" in log   # the probe's rates: in the file only
