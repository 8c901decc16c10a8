"""The embedded default, run from the command line as a user would: everything it promises is on disk."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustness_bias.pipeline import run
from robustness_bias.analysis.summary import OVERALL
from wandb_files import history, logged_images, logged_table, offline_runs, run_identity, run_log, summary

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default_run")
    done = subprocess.run([sys.executable, "-m", "robustness_bias", f"hydra.run.dir={out}"], cwd=out,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("tag", ["first", "middle", "final"])
def test_records_per_audit(default_run, tag):
    records = pd.read_parquet(default_run / "audits" / tag / "records.parquet")
    expected = {"sample_index", "label", "class", "prediction", "correct", "estimator", "epoch", "epoch_tag",
                "precision", "distance", "bound", "success", "queries"}
    assert expected <= set(records.columns)
    # the 20% test split of 1,797 digits; smoothing certifies every 5th test image, as in the paper
    assert records.groupby("estimator", observed=True).size().to_dict() == {"exact": 360, "deepfool": 360, "cw": 360, "rs": 72}
    assert (records["epoch_tag"] == tag).all()
    bounds = records.groupby("estimator", observed=True)["bound"].agg(set).to_dict()
    assert bounds == {"exact": {"exact"}, "deepfool": {"upper"}, "cw": {"upper"}, "rs": {"lower"}}
    assert (records["epoch"] == {"first": 1, "middle": 3, "final": 6}[tag]).all()
    attacked = records[records["correct"]]
    for estimator in ("exact", "deepfool"):
        solved = attacked[attacked["estimator"] == estimator]
        assert solved["success"].all() and (solved["distance"] > 0).all() and np.isfinite(solved["distance"]).all()
    # failures are +inf, never a silent number; smoothing's abstentions are radius 0
    failed = attacked[~attacked["success"]]
    assert np.isinf(failed.loc[failed["estimator"] != "rs", "distance"]).all()
    assert (failed.loc[failed["estimator"] == "rs", "distance"] == 0).all()
    assert (attacked["queries"] > 0).all() and (records.loc[~records["correct"], "queries"] == 0).all()
    assert records.loc[~records["correct"], "distance"].isna().all()
    assert (records["correct"] == (records["label"] == records["prediction"])).all()
    # one prediction per sample, shared by all estimators
    by_sample = records.groupby("sample_index")["prediction"].nunique()
    assert (by_sample == 1).all()


def test_summary_has_every_group_and_the_metrics(default_run):
    summary = pd.read_parquet(default_run / "audits" / "final" / "summary.parquet")
    groups = summary[summary["group"] != OVERALL]
    for estimator, size in {"exact": 360, "deepfool": 360, "cw": 360, "rs": 72}.items():
        mine = groups[groups["estimator"] == estimator]
        assert sorted(mine["group"]) == [str(d) for d in range(10)]
        assert mine["size"].sum() == size
    for column in ("accuracy", "success_share", "mean_distance", "median_distance", "rb_q25", "rb_q50", "rb_q75"):
        assert groups[column].notna().all(), column
    # σ with its uncertainty for every group large enough (smoothing audits every 5th image only)
    assert (groups["too_small"] == (groups["attacked"] < 5)).all()
    assert not groups.loc[groups["estimator"] != "rs", "too_small"].any()
    sized = groups[~groups["too_small"]]
    for column in ("sigma", "sigma_low", "sigma_high", "p_value", "p_adjusted"):
        assert sized[column].notna().all() and groups.loc[groups["too_small"], "sigma"].isna().all(), column
    assert (sized["sigma_low"] <= sized["sigma_high"]).all() and sized["p_adjusted"].between(0, 1).all()
    # DeepFool is an upper bound of the exact distance on this linear model
    overall = summary[summary["group"] == OVERALL].set_index("estimator")
    assert overall.loc["deepfool", "median_distance"] >= overall.loc["exact", "median_distance"]
    assert pd.read_csv(default_run / "audits" / "final" / "summary.csv").shape == summary.shape


def test_figures_are_pngs(default_run):
    for tag in ("first", "middle", "final"):
        for name in (f"{tag}_survival_class.png", f"{tag}_sigma.png"):
            assert (default_run / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wandb_offline_run_holds_each_audits_summary_and_figures(default_run):
    [run] = offline_runs(default_run)
    for tag in ("first", "middle", "final"):
        summary = pd.read_parquet(default_run / "audits" / tag / "summary.parquet")
        logged = logged_table(run, f"audit/{tag}/summary")
        assert list(logged.columns) == list(summary.columns)
        assert list(logged["group"]) == list(summary["group"].astype(str))
        for column in ("sigma", "p_adjusted"):
            np.testing.assert_allclose(logged[column].astype(float), summary[column], equal_nan=True)
        for name in ("survival", "sigma"):
            [image] = logged_images(run, f"audit/{tag}/figures/{name}")
            assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_wandb_run_is_named_grouped_and_charts_sigma_against_the_epoch(default_run):
    [run_folder] = offline_runs(default_run)
    records = run_log(run_folder)
    assert run_identity(records) == {"name": "default-digits-logreg-s0", "group": "default", "job_type": "train",
                                     "tags": ["default", "digits", "logreg", "exact", "deepfool", "cw", "rs"]}
    final = pd.read_parquet(default_run / "audits" / "final" / "summary.parquet")
    worst = final[(final["estimator"] == "deepfool") & (final["group"] != OVERALL)].sort_values("sigma").iloc[0]
    key = f"sigma/deepfool/class={worst['group']}"
    charted = [(step["audit/epoch"], step[key]) for step in history(records) if key in step]
    assert [epoch for epoch, _ in charted] == [1, 3, 6]   # first, middle and final: one chart
    assert charted[-1][1] == pytest.approx(worst["sigma"])
    headline = summary(records)
    assert headline["least_robust/deepfool"] == f"class={worst['group']}"
    assert headline["least_robust/deepfool/sigma"] == pytest.approx(worst["sigma"])


def test_sigma_and_training_curves_reach_wandb(make_config, tmp_path, wandb_logged):
    import wandb

    run(make_config("trainer.max_epochs=2", "estimator=[exact,deepfool]"))
    assert wandb.run is None   # the job closed its run
    summary = pd.read_parquet(tmp_path / "audits" / "final" / "summary.parquet")
    sized = summary[(summary["group"] != OVERALL) & ~summary["too_small"]]
    assert len(sized) == 20
    for row in sized.itertuples():
        assert wandb_logged[f"audit/final/{row.estimator}/sigma/class={row.group}"] == pytest.approx(row.sigma)
        assert wandb_logged[f"audit/final/{row.estimator}/p_adjusted/class={row.group}"] == pytest.approx(row.p_adjusted)
    assert {"train/loss_epoch", "val/acc", "test/acc"} <= set(wandb_logged)
    [offline] = offline_runs(tmp_path)
    assert len(logged_table(offline, "audit/final/summary")) == len(summary)


def test_result_and_checkpoint(default_run):
    result = json.loads((default_run / "result.json").read_text())
    assert result["test_accuracy"] > 0.9
    assert (default_run / "checkpoints" / "last.ckpt").is_file()


def test_a_sweep_gives_one_closed_wandb_run_per_job(tmp_path):
    done = subprocess.run([sys.executable, "-m", "robustness_bias", "-m", "seed=0,1", "trainer.max_epochs=1",
                           "audit.progress=false", f"hydra.sweep.dir={tmp_path}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "result.json").is_file())
    assert [job.name.rsplit("-", 1)[0] for job in jobs] == ["digits-logreg-s0", "digits-logreg-s1"]   # -<overrides' hash>
    sigmas = []
    for job in jobs:
        # each job's own run, holding that job's summary and nothing of the other's
        [run_folder] = offline_runs(job)
        logged = logged_table(run_folder, "audit/final/summary")
        summary = pd.read_parquet(job / "audits" / "final" / "summary.parquet")
        np.testing.assert_allclose(logged["sigma"].astype(float), summary["sigma"], equal_nan=True)
        assert len(logged_images(run_folder, "audit/final/figures/sigma")) == 1
        sigmas.append(summary["sigma"].to_numpy())
    assert not np.allclose(*sigmas, equal_nan=True)   # two seeds, two models
