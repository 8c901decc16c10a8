"""The paper's tables from sweep outputs: hand-built records, real sweeps, and `make paper SMOKE=1`."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustness_bias.report import cli as report

ROOT = Path(__file__).resolve().parent.parent
NAN = math.nan

# σ per (model, estimator) at the final audit for groups a, b, c of the partition "race".
FINAL = {
    ("logreg", "exact"): [-0.2, 0.1, 0.3],
    ("logreg", "deepfool"): [-0.1, 0.2, -0.1],
    ("logreg", "cw"): [-0.3, -0.1, 0.2],
    ("logreg", "rs"): [0.1, 0.1, 0.1],
    ("cnn", "deepfool"): [0.5, -0.5, NAN],
    ("cnn", "cw"): [0.4, 0.2, 0.1],
    ("cnn", "rs"): [0.3, -0.2, 0.1],
}


def write_job(folder: Path, dataset: str, model: str, accuracy: float, sigmas: dict[str, list[float]],
              regularizer: dict | None = None) -> None:
    """A finished job as the pipeline leaves it: result.json and one summary per audit."""
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"dataset": dataset, "model": model, "test_accuracy": accuracy,
                                                    "regularizer": regularizer}))
    for tag in ("first", "middle", "final"):
        rows = [{"estimator": "rs", "partition": "race", "group": "(all)", "sigma": NAN, "epoch_tag": tag}]
        for estimator, values in sigmas.items():
            # epoch 1 flips the sign of group a for DeepFool; the middle audit equals the final one
            shown = [-values[0], *values[1:]] if tag == "first" and estimator == "deepfool" else values
            rows += [{"estimator": estimator, "partition": "race", "group": g, "sigma": s, "epoch_tag": tag}
                     for g, s in zip("abc", shown)]
        target = folder / "audits" / tag
        target.mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(target / "summary.parquet")


@pytest.fixture
def sweep(tmp_path):
    for model, accuracy in (("logreg", 0.5), ("cnn", 0.75)):
        write_job(tmp_path / "sweep" / f"job-{model}", "utkface", model, accuracy,
                  {e: v for (m, e), v in FINAL.items() if m == model})
    return tmp_path / "sweep"


def test_tables_on_hand_built_records(sweep, tmp_path):
    tables = report.main([str(sweep), "--out", str(tmp_path / "out"), "--only", "table1", "table2", "agreement"])
    t1 = tables["table1"].set_index("dataset").loc["utkface"]
    # RS vs DeepFool: logreg agrees on b only; cnn on a and b (c undefined) → 3 of 5
    assert t1["cells (deepfool)"] == 5 and t1["rs~deepfool %"] == pytest.approx(60.0)
    # RS vs CW: logreg agrees on c; cnn on a and c → 3 of 6
    assert t1["cells (cw)"] == 6 and t1["rs~cw %"] == pytest.approx(50.0)
    assert t1["paper rs~deepfool %"] == 74.24 and t1["paper rs~cw %"] == 72.73

    t2 = tables["table2"].set_index("model")
    assert t2.loc["logreg", "accuracy %"] == 50.0 and t2.loc["cnn", "accuracy %"] == 75.0

    stats = tables["agreement"].set_index("comparison")
    exact_df = stats.loc["7.1 exact vs deepfool"]
    assert (exact_df["agree"], exact_df["cells"]) == (2, 3)
    # differences −0.1, −0.1, 0.4: mean 0.2/3, population variance 0.05/0.9
    assert exact_df["mean_difference"] == pytest.approx(0.2 / 3)
    assert exact_df["variance_difference"] == pytest.approx(0.05 / 0.9)
    assert tuple(stats.loc["7.1 exact vs cw", ["agree", "cells"]]) == (2, 3)
    assert tuple(stats.loc["8.1 exact vs rs", ["agree", "cells"]]) == (2, 3)
    # DeepFool vs CW over both models: logreg a; cnn a (c undefined) → 2 of 5
    assert tuple(stats.loc["7.2 deepfool vs cw", ["agree", "cells"]]) == (2, 5)
    # first vs final: DeepFool differs on group a of each model; CW never
    assert tuple(stats.loc["7.2 deepfool first vs final", ["agree", "cells"]]) == (3, 5)
    assert tuple(stats.loc["7.2 cw first vs final", ["agree", "cells"]]) == (6, 6)
    assert tuple(stats.loc["7.2 deepfool middle vs final", ["agree", "cells"]]) == (5, 5)

    out = tmp_path / "out"
    for name in ("table1", "table2", "agreement"):
        assert (out / f"{name}.md").read_text().startswith("| ")
        pd.testing.assert_frame_equal(pd.read_csv(out / f"{name}.csv"), tables[name], check_dtype=False)


def test_intersections_are_reported_but_not_counted_as_the_papers_cells(sweep, tmp_path):
    for summary in sweep.glob("job-*/audits/*/summary.parquet"):   # a race×gender group, σ of opposite signs
        frame = pd.read_parquet(summary)
        extra = [{"estimator": e, "partition": "race×gender", "group": "a×f", "sigma": sign, "epoch_tag": frame["epoch_tag"][0]}
                 for e, sign in (("rs", 1.0), ("deepfool", -1.0), ("cw", -1.0))]
        pd.concat([frame, pd.DataFrame(extra)], ignore_index=True).to_parquet(summary)
    tables = report.main([str(sweep), "--out", str(tmp_path / "out"), "--only", "table1", "sigma_final"])
    t1 = tables["table1"].set_index("dataset").loc["utkface"]
    assert t1["cells (deepfool)"] == 5 and t1["cells (cw)"] == 6
    assert (tables["sigma_final"]["partition"] == "race×gender").sum() == 6


def test_heatmaps_from_hand_built_records(sweep, tmp_path):
    report.main([str(sweep), "--out", str(tmp_path / "out"), "--only", "figures"])
    for estimator in ("exact", "deepfool", "cw", "rs"):
        for suffix in ("png", "pdf"):
            assert (tmp_path / "out" / "figures" / f"heatmap_utkface_{estimator}_race.{suffix}").stat().st_size > 0


def test_figures_call_the_class_partition_by_what_the_job_says_it_is(tmp_path, monkeypatch):
    """A UTKFace job writes partition_names {"class": "age"} into result.json: the heatmaps say age."""
    from robustness_bias.report import figures

    write_job(tmp_path / "sweep" / "job", "utkface", "logreg", 0.5, {"deepfool": [-0.1, 0.2, 0.0]})
    result = tmp_path / "sweep" / "job" / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "partition_names": {"class": "age"}}))
    for summary in (tmp_path / "sweep" / "job" / "audits").glob("*/summary.parquet"):
        pd.read_parquet(summary).assign(partition="class").to_parquet(summary)
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, also_pdf: drawn.append(fig) or path)
    report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--only", "figures"])
    titles = [fig._suptitle.get_text() for fig in drawn]
    assert titles and all(title.startswith("utkface, class (age): σ(P) by ") for title in titles), titles


def test_final_sigmas_with_their_intervals(sweep, tmp_path):
    tables = report.main([str(sweep), "--out", str(tmp_path / "out"), "--only", "sigma_final", "settings"])
    assert "settings" not in tables            # hand-built jobs have no saved config
    rows = tables["sigma_final"].set_index(["model", "estimator", "group"])
    assert len(rows) == sum(1 for values in FINAL.values() for v in values if not math.isnan(v))
    assert rows.loc[("cnn", "deepfool", "b"), "σ"] == -0.5 and rows.loc[("logreg", "exact", "c"), "σ"] == 0.3
    assert (tmp_path / "out" / "sigma_final.md").is_file()


def test_no_finished_jobs_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        report.main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "no finished jobs" in capsys.readouterr().err


def _sweep(folder: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustness_bias", "-m", "seed=0,1", "trainer.max_epochs=1",
                           "estimator=[exact,deepfool]", "logger=none", "audit.progress=false", *overrides,
                           f"hydra.sweep.dir={folder}"], capture_output=True, text=True, timeout=600, cwd=folder.parent)


def _jobs_that_ran(folder: Path) -> int:
    logs = "".join(p.read_text() for p in folder.glob("*/robustness_bias.log"))
    return logs.count("test accuracy") - logs.count("skipped")


def _sweep_lines(done: subprocess.CompletedProcess, ending: str = "") -> list[str]:
    """The jobs named in the lines a sweep ends with, each with its accuracy and least robust class."""
    _, _, tail = done.stdout.partition(f"sweep {done.args[-1].split('=', 1)[1]}: ")
    lines = [line.strip() for line in tail.splitlines()[1:]]
    assert all(": test accuracy 0." in line and "; least robust class: exact " in line and "deepfool" in line
               and line.endswith(ending) for line in lines), lines
    return [line.split(":")[0].rsplit("-", 1)[0] for line in lines]   # without the overrides' hash


@pytest.mark.slow
def test_submitit_sweep_feeds_the_report_and_a_rerun_recomputes_nothing(tmp_path):
    folder = tmp_path / "sweep"
    done = _sweep(folder, "hydra/launcher=local")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name.rsplit("-", 1)[0] for p in folder.glob("digits-logreg-*")) == ["digits-logreg-s0", "digits-logreg-s1"]
    logs = "".join(p.read_text() for p in folder.glob("*/robustness_bias.log"))
    assert logs.count("test accuracy") == 2 and "skipped" not in logs
    assert _sweep_lines(done) == ["digits-logreg-s0", "digits-logreg-s1"]   # the sweep's last word: a line per job
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*/audits/final/records.parquet")}

    again = _sweep(folder, "hydra/launcher=local")
    assert again.returncode == 0, again.stderr[-3000:]
    logs = "".join(p.read_text() for p in folder.glob("*/robustness_bias.log"))
    assert logs.count("skipped") == 2                        # both jobs were skipped …
    assert _sweep_lines(again, "[finished before: skipped]") == ["digits-logreg-s0", "digits-logreg-s1"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps   # … and nothing was rewritten

    tables = report.main([str(folder), "--out", str(tmp_path / "report"), "--only", "table2", "agreement"])
    assert list(tables["table2"]["model"]) == ["logreg", "logreg"]
    assert tables["agreement"].set_index("comparison").loc["7.1 exact vs deepfool", "cells"] == 20  # 10 classes × 2 jobs (seeds)


@pytest.mark.slow
def test_a_sweep_of_other_settings_in_a_finished_sweeps_folder_writes_jobs_of_its_own(tmp_path):
    """Job folders are named by the job and its overrides' hash: a sweep of other settings in a finished
    sweep's folder gets folders of its own and leaves the finished jobs as they were (docs/design.md,
    "Reliability"; a folder given by hand is refused instead: tests/test_run_lock.py)."""
    folder = tmp_path / "sweep"
    assert _sweep(folder).returncode == 0
    results = {p: p.read_bytes() for p in folder.glob("*/result.json")}
    changed = _sweep(folder, "estimator.deepfool.overshoot=0.05")
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert len(results) == 2 and {p: p.read_bytes() for p in results} == results
    assert len(list(folder.glob("*/result.json"))) == 4
    logs = "".join(p.read_text() for p in folder.glob("*/robustness_bias.log"))
    assert "skipped" not in logs and logs.count("test accuracy") == 4


@pytest.mark.slow
def test_make_paper_smoke_writes_every_table_and_figure(tmp_path):
    sweeps, out = tmp_path / "sweeps", tmp_path / "report"
    # this interpreter, and no reinstall midway through the suite (-o: take the installed stamp as current)
    done = subprocess.run(["make", "-o", ".venv/.installed", "paper", "SMOKE=1", f"PY={sys.executable}",
                           f"SWEEP_ROOT={sweeps}", f"REPORT_DIR={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    expected = [f"{t}.{s}" for t in ("table1", "table2", "agreement") for s in ("md", "csv")]
    for dataset, partitions in (("digits", ["class"]), ("synthetic", ["class", "group"])):
        for kind in ("png", "pdf"):
            for partition in partitions:
                expected += [f"figures/heatmap_{dataset}_{e}_{partition}.{kind}" for e in ("exact", "deepfool", "cw", "rs")]
                expected.append(f"figures/distances_{dataset}_{partition}.{kind}")
                expected += [f"figures/survival_{dataset}_{m}_{partition}.{kind}" for m in ("logreg", "small_cnn")]
    missing = [name for name in expected if not (out / name).is_file()]
    assert not missing
    assert sorted(p.name.rsplit("-", 1)[0] for p in (sweeps / "smoke_digits").glob("*-*")) == ["digits-logreg-s0",
                                                                                               "digits-small_cnn-s0"]
    settings = pd.read_csv(out / "settings.csv")   # the settings each job ran with, from its saved config
    assert len(settings) == 4 and settings["rs"].str.contains("N = 1,000, N0 = 20").all()
    assert set(settings["epochs"]) == {3}
    table2 = pd.read_csv(out / "table2.csv")
    assert len(table2) == 4 and table2["accuracy %"].between(50, 100).all()


def test_report_is_logged_to_an_offline_wandb_run(sweep, tmp_path):
    import wandb
    from wandb_files import logged_images, logged_table, offline_runs

    out = tmp_path / "out"
    report.main([str(sweep), "--out", str(out), "--wandb"])
    assert wandb.run is None
    [run] = offline_runs(out)
    for name in ("table1", "table2", "agreement"):
        written = pd.read_csv(out / f"{name}.csv")
        logged = logged_table(run, f"report/{name}")
        assert list(logged.columns) == list(written.columns) and len(logged) == len(written)
    [heatmap] = logged_images(run, "report/figures/heatmap_utkface_deepfool_race")
    assert heatmap.read_bytes() == (out / "figures" / "heatmap_utkface_deepfool_race.png").read_bytes()


def test_regularized_models_are_compared_with_their_originals(sweep, tmp_path):
    for alpha, sigma_a, accuracy in ((1.0, -0.05, 0.7), (10.0, 0.01, 0.6)):
        write_job(sweep / f"job-cnn-reg-{alpha}", "utkface", "cnn", accuracy,
                  {"deepfool": [sigma_a, -0.1, 0.0], "cw": [sigma_a, 0.1, 0.1], "rs": [0.1, 0.1, 0.1]},
                  regularizer={"attribute": "race", "group": "a", "alpha": alpha, "tau": 2.0, "temperature": 0.1})
    out = tmp_path / "out"
    tables = report.main([str(sweep), "--out", str(out)])
    # the paper's tables still cover the two original models only
    assert list(tables["table2"]["model"]) == ["cnn", "logreg"]
    assert tables["table1"].iloc[0]["cells (deepfool)"] == 5
    rows = tables["regularized"].set_index("alpha")
    assert rows.loc[1.0, "σ deepfool"] == -0.05 and rows.loc[1.0, "original σ deepfool"] == 0.5
    assert rows.loc[10.0, "accuracy %"] == 60.0 and rows.loc[10.0, "original accuracy %"] == 75.0
    assert rows.loc[1.0, "target"] == "race=a" and rows.loc[1.0, "tau"] == 2.0
    assert (out / "figures" / "regularized_utkface_cnn.png").is_file()
    assert (out / "regularized.md").is_file()


def write_seeded_job(folder: Path, model: str, seed: int, rows: list[tuple]) -> None:
    """A finished job of one seed with a final summary of (estimator, group, σ, adjusted p, flag) rows."""
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"dataset": "utkface", "model": model, "seed": seed,
                                                    "test_accuracy": 0.6 + seed / 100, "regularizer": None}))
    frame = pd.DataFrame([{"estimator": e, "partition": "race", "group": g, "sigma": s, "p_adjusted": p, "flag": f,
                           "epoch_tag": "final"} for e, g, s, p, f in rows])
    (folder / "audits" / "final").mkdir(parents=True)
    frame.to_parquet(folder / "audits" / "final" / "summary.parquet")


def test_findings_are_stated_only_where_they_hold_in_every_seed(tmp_path):
    sweep = tmp_path / "sweep"
    for seed in (0, 1, 2):
        write_seeded_job(sweep / f"{seed}-cnn", "cnn", seed, [
            ("deepfool", "white", -0.25 - seed / 100, 0.01, ""),   # significant and negative in every seed
            ("deepfool", "black", 0.1 if seed < 2 else -0.05, 0.2, ""),   # changes sign in seed 2
            ("cw", "white", -0.2, 0.01 if seed else 0.3, "failures"),      # not significant in seed 0
            ("cw", "black", 0.15, 0.04, ""),
        ])
    tables = report.main([str(sweep), "--out", str(tmp_path / "out"), "--only", "seeds", "findings"])
    seeds = tables["seeds"].set_index(["estimator", "group"])
    assert seeds.loc[("deepfool", "white"), "σ by seed"] == "-0.250, -0.260, -0.270"
    assert seeds.loc[("deepfool", "white"), "significant in every seed"]
    assert not seeds.loc[("deepfool", "black"), "sign holds"]
    assert seeds.loc[("cw", "white"), "sign holds"] and not seeds.loc[("cw", "white"), "significant in every seed"]
    assert seeds.loc[("cw", "white"), "flagged"] == "failures"

    text = (tmp_path / "out" / "findings.md").read_text()
    significant = text.split("**Significant in every seed**")[1].split("**")[0]
    assert "race = white: less robust than the rest in cnn (deepfool -0.27 to -0.25)" in significant
    assert "race = black: more robust than the rest in cnn (cw +0.15 to +0.15)" in significant
    assert "cw -0.20" not in significant   # not significant in seed 0
    assert "by race, white is the least robust group in every seed for cnn by cw, cnn by deepfool" in text
    assert "the estimators' signs agree in every seed in 1 of 2 cells" in text   # white agrees; black flips under deepfool
    assert "1 of 4 cells (model × estimator × group) change sign" in text


def write_confounded_job(folder: Path, seed: int, direct: float) -> None:
    """A finished job whose final records hold distances set by age alone (old: 3× nearer), white faces mostly
    old; ``direct`` multiplies the white faces' distances within every age. Its summary is the pipeline's own."""
    from robustness_bias.analysis.summary import summarize, summary_settings

    rng = np.random.default_rng(seed)
    n = 800
    old = rng.random(n) < 0.5
    white = rng.random(n) < np.where(old, 0.6, 0.1)
    records = pd.DataFrame({"estimator": pd.Categorical(["exact"] * n), "epoch": 3,
                            "distance": rng.exponential(np.where(old, 0.5, 1.5) * np.where(white, direct, 1.0)),
                            "correct": rng.random(n) < 0.9, "success": True, "cap": np.inf,
                            "race": pd.Categorical(np.where(white, "white", "black")),
                            "class": pd.Categorical(np.where(old, "40-59", "0-14"))})
    options = {"conditional": True, "failures": "censor", "tau_max": "pooled_max", "rb_quantiles": [0.5],
               "min_group_size": 5, "significance": {"resamples": 200, "permutations": 200, "level": 0.95, "seed": 0},
               "adjust_for": []}
    settings = summary_settings(options, ["class", "race"], ["race"])
    final = folder / "audits" / "final"
    final.mkdir(parents=True)
    records.to_parquet(final / "records.parquet")
    summarize(records, settings).assign(epoch_tag="final").to_parquet(final / "summary.parquet")
    (folder / "result.json").write_text(json.dumps({"dataset": "utkface", "model": f"direct{direct}", "seed": seed,
                                                    "test_accuracy": 0.9, "regularizer": None,
                                                    "summary_settings": settings}))


def test_the_report_adjusts_finished_sweeps_and_says_which_findings_survive(tmp_path, caplog):
    """White faces are 'less robust' only through age in one model, and also of their own in the other: the report,
    asked to adjust for age after the sweep, keeps the second finding and says the first does not survive."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1, 2):
        for direct in (1.0, 0.5):
            write_confounded_job(sweep / f"{seed}-direct{direct}", seed, direct)
    tables = report.main([str(sweep), "--out", str(tmp_path / "out"), "--only", "seeds", "adjusted", "findings",
                          "--adjust-for", "class"])
    adjusted = tables["adjusted"]
    white = adjusted[(adjusted["partition"] == "race") & (adjusted["group"] == "white")].set_index(["model", "seed"])
    assert (white["σ"] < -0.3).all() and (white["adjusted for"] == "class").all()
    assert (white.loc["direct1.0", "adj. σ low"] < 0).all() and (white.loc["direct1.0", "adj. σ high"] > 0).all()
    assert (white.loc["direct0.5", "adj. σ high"] < 0).all()
    assert set(adjusted["partition"]) == {"race"}   # the class is not adjusted for itself
    assert (tmp_path / "out" / "adjusted.md").is_file() and (tmp_path / "out" / "adjusted_seeds.csv").is_file()
    text = (tmp_path / "out" / "findings.md").read_text().split("**Adjusted for the other attributes**")[1]
    assert "race = white, adjusted for class: still significant with the same sign in every seed in direct0.5" in text
    assert "race = white, adjusted for class: not significant in every seed once adjusted in direct1.0" in text

    tables = report.main([str(sweep), "--out", str(tmp_path / "age"), "--only", "adjusted", "--adjust-for", "age"])
    assert "adjusted" not in tables and "which its records lack" in caplog.text
    assert "adjusted" not in report.main([str(sweep), "--out", str(tmp_path / "none"), "--only", "adjusted"])


def test_each_estimators_failures_and_caps_are_tabled_per_job(tmp_path):
    """estimators.md: per job and estimator, what its σ rest on (from the final summary's overall row)."""
    write_confounded_job(tmp_path / "sweep" / "0-direct1.0", 0, 1.0)
    final = tmp_path / "sweep" / "0-direct1.0" / "audits" / "final"
    records = pd.read_parquet(final / "records.parquet")
    table = report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--only", "estimators"])["estimators"]
    row = table.iloc[0]
    assert (row["model"], row["seed"], row["estimator"]) == ("direct1.0", 0, "exact")
    assert row["attacked"] == records["correct"].sum() and row["failed"] == 0 and row["success %"] == 100
    assert row["median distance"] == pytest.approx(records.loc[records["correct"], "distance"].median())


SAVED_CONFIG = """\
learning_rates: {cnn: 0.05}
model: {lr: '${learning_rates.cnn}'}
optim: {lr: '${model.lr}'}
dataset: {image_size: '${oc.env:RB_TEST_SECRET}'}
trainer: {max_epochs: 3}
estimator:
  rs: {_target_: x, n: 1000, n0: '${oc.env:RB_TEST_SECRET}', sigma: 0.25, alpha: 0.001}
audit: {plan: {rs: {every_nth: 5}}}
"""


def test_saved_configs_are_read_without_resolvers_so_no_environment_variable_leaks(sweep, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setenv("RB_TEST_SECRET", "hunter2-secret")
    for job in sweep.iterdir():
        (job / ".hydra").mkdir()
        (job / ".hydra" / "config.yaml").write_text(SAVED_CONFIG)
    out = tmp_path / "out"
    settings = report.main([str(sweep), "--out", str(out), "--only", "settings"])["settings"]
    written = (out / "settings.md").read_text() + (out / "settings.csv").read_text() + capsys.readouterr().out
    assert "hunter2" not in written
    assert "${oc.env:RB_TEST_SECRET}" in written   # shown as its text
    assert list(settings["lr"]) == [0.05, 0.05]    # references to other settings are still followed
    assert list(settings["rs"]) == ["every 5; N = 1,000, N0 = ${oc.env:RB_TEST_SECRET}, σ = 0.25, α = 0.001"] * 2


# ---------------------------------------------------------------- damaged jobs


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """A job the pipeline finished (records, summaries and result.json of its audits), with a saved config."""
    from conftest import compose_config

    from robustness_bias.pipeline import run

    job = tmp_path_factory.mktemp("finished") / "sweep" / "job"
    run(compose_config(["logger=none", "dataset=synthetic", "dataset.n_samples=300", "partition=group",
                        "estimator=[exact]", "trainer.max_epochs=1", "audit.progress=false",
                        "trainer.enable_progress_bar=false"], job))
    (job / ".hydra").mkdir()
    (job / ".hydra" / "config.yaml").write_text(SAVED_CONFIG)
    return job


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])   # a full disk, a copy that stopped


DAMAGES = {
    "config": (".hydra/config.yaml", lambda path: path.write_text("trainer: {max_epochs: [3\n"),
               r"is not valid YAML \(expected ',' or ']', but got '<stream end>' at line 2\)"),
    "records": ("audits/final/records.parquet", cut_short, r"is damaged, cut short or not Parquet \(ArrowInvalid\)"),
    "summary": ("audits/final/summary.parquet", cut_short, r"is damaged, cut short or not Parquet \(ArrowInvalid\)"),
    "records-deleted": ("audits/final/records.parquet", Path.unlink,
                        "is missing, so the job's distances would be left out of the figures, σ adjusted and the "
                        "AFT ratios while its σ stayed in the tables"),
    "result": ("result.json", cut_short, r"is not valid JSON \(.*\)")}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_job_is_one_line_naming_it_its_file_and_the_fix(finished_job, tmp_path, capsys, damage):
    """Each was a traceback naming no job, or (records deleted) a report without the job's distances, exit 0."""
    sweep = tmp_path / "sweep"
    shutil.copytree(finished_job.parent, sweep)
    name, spoil, problem = DAMAGES[damage]
    spoil(sweep / "job" / name)
    with pytest.raises(SystemExit) as stop:
        report.main([str(sweep), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1
    assert re.fullmatch(rf"robustness_bias\.report: error: {sweep / 'job'}: {re.escape(name)} {problem}\. Fix: delete "
                        rf"{sweep / 'job'} and run that job again, or delete it to report without it", err.strip()), err
    assert not (tmp_path / "out").exists(), "nothing is written before every job was read"


def test_an_intact_job_passes_the_reading_of_its_files(finished_job, tmp_path):
    assert report.main([str(finished_job.parent), "--out", str(tmp_path / "out"), "--only", "table2"])["table2"] \
        .shape[0] == 1
