"""The report's mitigation tables on a hand-built sweep: an unmitigated job, a regularized one and a balanced one."""

import json

import numpy as np
import pandas as pd
import pytest

from robustness_bias.report import cli as report


def write_job(folder, sigmas: dict, accuracy: float, seconds: float, regularizer=None, balance_by=None) -> None:
    """A finished job: result.json (accuracy per group, training seconds) and a final DeepFool summary with
    σ, its interval and p for race (white, black) and age (40-59, 0-14)."""
    final = folder / "audits" / "final"
    final.mkdir(parents=True)
    group_accuracy = {"race": {"white": accuracy - 0.05, "black": accuracy + 0.05},
                      "class": {"40-59": accuracy - 0.1, "0-14": accuracy + 0.1}}
    (folder / "result.json").write_text(json.dumps({
        "dataset": "utkface", "model": "utk_classifier", "seed": 0, "test_accuracy": accuracy, "regularizer": regularizer,
        "balance_by": balance_by, "train_seconds": seconds, "group_accuracy": group_accuracy}))
    rows = [{"estimator": "deepfool", "partition": partition, "group": group, "sigma": sigma, "sigma_low": sigma - 0.1,
             "sigma_high": sigma + 0.1, "p_adjusted": 0.01 if abs(sigma) > 0.2 else 0.5, "epoch_tag": "final"}
            for (partition, group), sigma in sigmas.items()]
    rows.append({"estimator": "deepfool", "partition": "race", "group": "(all)", "sigma": np.nan, "epoch_tag": "final"})
    pd.DataFrame(rows).to_parquet(final / "summary.parquet")


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "sweep"
    write_job(sweep / "0-none", {("race", "white"): -0.27, ("race", "black"): 0.2, ("class", "40-59"): -0.7,
                                 ("class", "0-14"): 0.3}, 0.58, 300.0)
    write_job(sweep / "1-rb", {("race", "white"): -0.05, ("race", "black"): -0.3, ("class", "40-59"): -0.6,
                               ("class", "0-14"): 0.25}, 0.55, 900.0,
              regularizer={"attribute": "race", "group": "white", "alpha": 1.0, "tau": 0.8, "temperature": 0.1})
    write_job(sweep / "2-balanced", {("race", "white"): -0.2, ("race", "black"): 0.1, ("class", "40-59"): -0.75,
                                     ("class", "0-14"): 0.35}, 0.57, 310.0, balance_by="race")
    return sweep


def test_mitigated_jobs_beside_the_unmitigated_one(sweep, tmp_path):
    out = tmp_path / "out"
    tables = report.main([str(sweep), "--out", str(out), "--only", "table2", "mitigation"])
    assert list(tables["table2"]["model"]) == ["utk_classifier"]   # the paper's tables: the unmitigated job only
    table = tables["mitigation"].set_index("mitigation")
    assert list(table.index) == ["balanced by race", "rb race=white α=1 τ=0.8"]   # by name, not by folder
    rb = table.loc["rb race=white α=1 τ=0.8"]
    assert rb["targeted: σ before → after [95% interval]"] == "white: -0.27 [-0.37, -0.17] → -0.05 [-0.15, +0.05]"
    assert rb["targeted Δσ"] == pytest.approx(0.22)
    assert rb["largest fall elsewhere"] == "race=black: +0.20 → -0.30"   # the gap moved to black faces
    assert rb["elsewhere Δσ"] == pytest.approx(-0.5)
    assert (rb["accuracy %"], rb["accuracy before %"]) == pytest.approx((55.0, 58.0))
    assert (rb["worst targeted-partition group accuracy %"], rb["before %"]) == pytest.approx((50.0, 53.0))
    assert (rb["train s"], rb["train s before"]) == (900.0, 300.0)
    balanced = table.loc["balanced by race"]   # every race group is its target
    assert "black: +0.20 [+0.10, +0.30] → +0.10 [+0.00, +0.20]" in balanced["targeted: σ before → after [95% interval]"]
    assert "white: -0.27 [-0.37, -0.17] → -0.20 [-0.30, -0.10]" in balanced["targeted: σ before → after [95% interval]"]
    assert balanced["largest fall elsewhere"] == "class=40-59: -0.70 → -0.75"

    groups = tables["mitigation_groups"]
    assert len(groups) == 8 and groups["targeted"].sum() == 1 + 2
    age = groups[(groups["mitigation"] == "rb race=white α=1 τ=0.8") & (groups["group"] == "40-59")].iloc[0]
    assert (age["σ"], age["σ before"], age["accuracy %"], age["accuracy before %"]) == pytest.approx((-0.6, -0.7, 45, 48))
    assert (out / "mitigation.md").read_text().startswith("| dataset | model | seed | mitigation | estimator |")
    assert (out / "mitigation_groups.csv").is_file()


def test_no_mitigation_table_without_mitigated_jobs(sweep, tmp_path):
    for job in ("1-rb", "2-balanced"):
        for path in sorted((sweep / job).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (sweep / job).rmdir()
    tables = report.main([str(sweep), "--out", str(tmp_path / "out"), "--only", "mitigation"])
    assert "mitigation" not in tables and not (tmp_path / "out" / "mitigation.md").exists()


@pytest.mark.slow
def test_make_mitigation_runs_on_a_utkface_fixture(tmp_path):
    """The documented command's chain (sweep, then the report) on 200 fixture faces at 8 px, one epoch, two of the
    seven mitigations (all seven: 90 s on the 2-core CPU)."""
    import subprocess
    import sys
    from pathlib import Path

    from test_face_datasets import jpeg_bytes

    root = tmp_path / "data" / "UTKFace"
    root.mkdir(parents=True)
    for i in range(200):
        (root / f"{[5, 20, 30, 50, 70][i % 5]}_{i % 2}_{(i // 3) % 5}_2017011{i:09d}.jpg.chip.jpg").write_bytes(
            jpeg_bytes(i, size=16))
    done = subprocess.run(
        ["make", "-o", ".venv/.installed", "mitigation", "QUICK=1", f"PY={sys.executable}", f"DATA_DIR={tmp_path / 'data'}",
         f"SWEEP_ROOT={tmp_path / 'multirun'}", f"REPORT_DIR={tmp_path / 'reports'}",
         "SWEEP_ARGS=dataset.image_size=8 trainer.max_epochs=1 audit.plan.deepfool.every_nth=1 logger=none "
         "model=utk_classifier mitigation=none,rb_race_t08_a1"], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
        timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    table = pd.read_csv(tmp_path / "reports" / "mitigation" / "mitigation.csv")
    assert list(table["mitigation"]) == ["rb race=white α=1 τ=0.8"]
    assert table["train s"].gt(0).all() and table["train s before"].gt(0).all()
    assert table["accuracy %"].between(0, 100).all()
    result = json.loads(next((tmp_path / "multirun" / "utk_mitigation").glob("*-rb_race_t08_a1-seed0/result.json")).read_text())
    assert result["regularizer"]["group"] == "white" and result["regularizer"]["tau"] == 0.8
    assert set(result["group_accuracy"]) == {"class", "gender", "race"}
