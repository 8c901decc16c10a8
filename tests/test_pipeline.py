"""In-process jobs: the planted-bias known answer, the audit schedule, own data, and bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustness_bias.training import audit_schedule
from robustness_bias.data import DataError
from robustness_bias.estimators import EstimatorMismatch
from robustness_bias.config.rules import ConfigError
from robustness_bias.pipeline import run


def test_audit_schedule_first_middle_final():
    assert audit_schedule(6) == {1: ["first"], 3: ["middle"], 6: ["final"]}
    assert audit_schedule(5) == {1: ["first"], 3: ["middle"], 5: ["final"]}
    assert audit_schedule(2) == {1: ["first", "middle"], 2: ["final"]}
    assert audit_schedule(1) == {1: ["first", "middle", "final"]}


def test_synthetic_planted_group_is_less_robust(make_config, tmp_path):
    result = run(make_config("experiment=synthetic_group", "logger=none"))
    assert result["test_accuracy"] > 0.95
    assert result["sigma"]["exact/group=planted"] < -0.3
    assert result["sigma"]["exact/group=reference"] > 0
    summary = pd.read_parquet(tmp_path / "audits" / "final" / "summary.parquet")
    planted = summary[(summary["partition"] == "group") & (summary["group"] == "planted")].iloc[0]
    reference = summary[(summary["partition"] == "group") & (summary["group"] == "reference")].iloc[0]
    assert planted["median_distance"] < 0.6 * reference["median_distance"]
    assert planted["rb_q50"] > 0.3


def test_one_epoch_audits_once_under_all_three_tags(make_config, tmp_path):
    run(make_config("dataset=synthetic", "dataset.n_samples=200", "partition=group", "logger=csv",
                    "trainer.max_epochs=1", "estimator=[exact,deepfool]"))
    frames = [pd.read_parquet(tmp_path / "audits" / tag / "records.parquet") for tag in ("first", "middle", "final")]
    pd.testing.assert_frame_equal(frames[0].drop(columns="epoch_tag"), frames[2].drop(columns="epoch_tag"))
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()


def _measured(tmp_path, tag):
    records = pd.read_parquet(tmp_path / "audits" / tag / "records.parquet")
    return set(records["estimator"].astype(str))


def test_an_estimator_measures_only_after_the_audits_its_plan_names(make_config, tmp_path):
    result = run(make_config("dataset=synthetic", "dataset.n_samples=200", "partition=group", "logger=none",
                             "trainer.max_epochs=3", "estimator=[exact,deepfool]", "audit.plan.deepfool.after=[final]",
                             "audit.plan.exact.after=[first,final]"))
    assert {tag: _measured(tmp_path, tag) for tag in ("first", "final")} == {"first": {"exact"},
                                                                             "final": {"exact", "deepfool"}}
    assert not (tmp_path / "audits" / "middle").exists()   # nothing measures after the middle epoch
    assert set(result["audits"]) == {"first", "final"}


def test_an_audit_plan_that_never_measures_the_final_model_fails_before_training(make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"audit\.plan\.exact\.after=\[final\]"):
        run(make_config("estimator=[exact]", "audit.plan.exact.after=[first]", "logger=none"))
    _assert_not_trained(tmp_path)


def test_one_audit_of_coinciding_tags_is_written_per_tag_with_its_own_estimators(make_config, tmp_path):
    run(make_config("dataset=synthetic", "dataset.n_samples=200", "partition=group", "logger=none",
                    "trainer.max_epochs=1", "estimator=[exact,deepfool]", "audit.plan.deepfool.after=[final]"))
    assert [_measured(tmp_path, tag) for tag in ("first", "middle", "final")] == [{"exact"}, {"exact"},
                                                                                 {"exact", "deepfool"}]


@pytest.fixture
def image_folder(tmp_path):
    """A tiny data set in the image_folder on-disk format: PNGs plus labels.csv with an attribute."""
    root = tmp_path / "faces"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        label = i % 2
        pixels = np.full((6, 6, 3), 60 + 140 * label, dtype=np.uint8) + rng.integers(0, 40, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / f"{i:03d}.png")
        rows.append({"path": f"img/{i:03d}.png", "label": ["cat", "dog"][label], "site": ["north", "south"][i % 3 == 0],
                     "camera": ["old", "new"][i % 4 == 0]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_own_images_with_an_attribute_partition(make_config, tmp_path, image_folder):
    result = run(make_config("dataset=image_folder", f"dataset.root={image_folder}", "+partition.by=[site]",
                             "logger=none", "trainer.max_epochs=2", "estimator=[exact]"))
    summary = pd.read_parquet(tmp_path / "audits" / "final" / "summary.parquet")
    assert set(summary["partition"]) == {"class", "site", "camera"}
    assert set(summary.loc[summary["partition"] == "class", "group"]) == {"(all)", "cat", "dog"}
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert set(records["site"]) <= {"north", "south"} and len(records) == 12
    assert 0 <= result["test_accuracy"] <= 1


def test_a_job_whose_data_folder_was_copied_elsewhere_skips_as_finished(make_config, tmp_path, image_folder):
    """The fingerprint holds what the data is, not where it lies: the same files under another root are the same job."""
    settings = ("dataset=image_folder", "logger=none", "trainer.max_epochs=1", "estimator=[exact]")
    first = run(make_config(*settings, f"dataset.root={image_folder}"))
    copied = shutil.copytree(image_folder, tmp_path / "elsewhere" / "faces")
    again = run(make_config(*settings, f"dataset.root={copied}"))
    assert again.get("skipped") and again["settings_hash"] == first["settings_hash"]
    content = json.loads((tmp_path / "dataset.json").read_text())["content"]
    (tmp_path / "result.json").unlink()   # unfinished now: the copy resumes, the same data
    assert not run(make_config(*settings, f"dataset.root={copied}")).get("skipped")
    assert json.loads((tmp_path / "dataset.json").read_text())["content"] == content


def test_an_unfinished_job_is_never_resumed_on_other_data(make_config, tmp_path, image_folder):
    settings = ("dataset=image_folder", "logger=none", "trainer.max_epochs=1", "estimator=[exact]",
                f"dataset.root={image_folder}")
    run(make_config(*settings))
    (tmp_path / "result.json").unlink()
    labels = pd.read_csv(image_folder / "labels.csv")
    labels.loc[0, "label"] = "dog" if labels.loc[0, "label"] == "cat" else "cat"   # one label changed
    labels.to_csv(image_folder / "labels.csv", index=False)
    records = (tmp_path / "audits" / "final" / "records.parquet").read_bytes()
    with pytest.raises(ConfigError, match=r"holds an unfinished job on other data .* Fix: give this job its own folder"):
        run(make_config(*settings))
    assert (tmp_path / "audits" / "final" / "records.parquet").read_bytes() == records   # nothing lost


def _assert_not_trained(tmp_path):
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "audits").exists()


@pytest.mark.parametrize("root", ["/no/such/folder", None])
def test_missing_data_path_fails_before_training(make_config, tmp_path, root):
    with pytest.raises(DataError, match=r"dataset\.root.*Fix: pass dataset\.root="):
        run(make_config("dataset=image_folder", f"dataset.root={root if root else 'null'}", "logger=none"))
    _assert_not_trained(tmp_path)


def test_misspelled_csv_fails_before_training(make_config, tmp_path, image_folder):
    with pytest.raises(DataError, match=r"dataset\.csv=label\.csv.*does not exist"):
        run(make_config("dataset=image_folder", f"dataset.root={image_folder}", "dataset.csv=label.csv", "logger=none"))
    _assert_not_trained(tmp_path)


def test_missing_image_file_is_named(make_config, tmp_path, image_folder):
    (image_folder / "img" / "007.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\).*007\.png"):
        run(make_config("dataset=image_folder", f"dataset.root={image_folder}", "logger=none"))
    _assert_not_trained(tmp_path)


def test_estimator_that_does_not_fit_the_model_fails_before_training(make_config, tmp_path):
    with pytest.raises(EstimatorMismatch, match=r"'exact' needs an affine model.*Fix: use model=logreg"):
        run(make_config("model=small_cnn", "estimator=[exact]", "logger=none"))
    _assert_not_trained(tmp_path)


def test_sweeps_may_skip_estimators_that_do_not_fit(make_config, tmp_path):
    run(make_config("model=small_cnn", "dataset=synthetic", "dataset.n_samples=100", "partition=group",
                    "estimator=[exact,deepfool]", "audit.skip_unfit_estimators=true", "logger=none",
                    "trainer.max_epochs=1"))
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert set(records["estimator"]) == {"deepfool"}


def test_mismatch_in_the_default_list_names_the_list_that_fits(make_config, tmp_path):
    with pytest.raises(EstimatorMismatch, match=r"For this model: estimator=\[deepfool,cw,rs\]$"):
        run(make_config("model=small_cnn", "logger=none"))
    _assert_not_trained(tmp_path)


@pytest.mark.parametrize("epochs", [0, -3])
def test_non_positive_epochs_fail_before_training(make_config, tmp_path, epochs):
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs=-?\d.*Fix: pass trainer\.max_epochs="):
        run(make_config(f"trainer.max_epochs={epochs}", "logger=none"))
    _assert_not_trained(tmp_path)


def test_an_experiments_settings_of_estimators_left_out_are_ignored(make_config, tmp_path):
    """smoke_digits sets parameters of cw and rs too: with estimator=[deepfool] they come without a
    _target_, and the job runs deepfool alone (with the experiment's settings for it)."""
    cfg = make_config("experiment=smoke_digits", "estimator=[deepfool]", "trainer.max_epochs=1", "logger=none")
    assert set(cfg.estimator) == {"deepfool", "cw", "rs"} and "_target_" not in cfg.estimator.rs
    run(cfg)
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert set(records["estimator"]) == {"deepfool"} and (records["queries"] <= 20 * 10).all()


def test_unknown_partition_names_the_choices(make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"no \['race'\].*choose among \['class'\]"):
        run(make_config("+partition.by=[race]", "logger=none"))
    _assert_not_trained(tmp_path)


def test_adjusting_for_an_unknown_attribute_names_the_choices_before_training(make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"audit.adjust_for=\['age'\]: this dataset has no \['age'\]. "
                                          r"Fix: adjust for some of \['class'\]"):
        run(make_config("audit.adjust_for=[age]", "logger=none"))
    _assert_not_trained(tmp_path)


@pytest.mark.parametrize(("override", "setting"), [("audit.plan.cw.every_nth=0", "audit.plan.cw.every_nth"),
                                                   ("audit.failures=ignore", "audit.failures"),
                                                   ("audit.tau_max=-1", "audit.tau_max"),
                                                   ("audit.plan.rs.chunk_size=0", "audit.plan.rs.chunk_size"),
                                                   ("audit.plan.rs.precision=fp8", "audit.plan.rs.precision"),
                                                   ("audit.plan.cw.after=[last]", "audit.plan.cw.after"),
                                                   ("audit.shard=2", "audit.shard=2 audit.num_shards=1")])
def test_impossible_audit_settings(make_config, override, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        run(make_config(override, "logger=none"))


@pytest.mark.parametrize(("overrides", "named"), [
    (["trainer.max_epochs=0"], "trainer.max_epochs=0"),
    (["dataset=image_folder"], "dataset.root is not set"),
    (["dataset=cifar10", "dataset.root=/nowhere"], "CIFAR-10 not found under dataset.root=/nowhere"),
    (["dataset=synthetic", "dataset.channels=3", "dataset.image_size=32", "model=resnet50", "imagenet.pretrained=true",
      "estimator=[deepfool]"], "model resnet50 with model.pretrained=true needs its ImageNet weights"),
])
def test_command_line_reports_bad_input_without_a_traceback(tmp_path, overrides, named):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home")}      # no cached ImageNet weights
    done = subprocess.run([sys.executable, "-m", "robustness_bias", *overrides, "logger=none",
                           f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"robustness_bias: error: {named}" in done.stderr
    assert "Fix" in done.stderr or "model.weights_path=/path/to/resnet50-0676ba61.pth" in done.stderr
    assert "Traceback" not in done.stderr
    _assert_not_trained(tmp_path)


def test_intersectional_partition_reports_small_groups_as_too_small(make_config, tmp_path, image_folder):
    run(make_config("dataset=image_folder", f"dataset.root={image_folder}", "+partition.by=[site,camera]",
                    "logger=none", "trainer.max_epochs=1", "estimator=[exact]", "audit.min_group_size=3"))
    summary = pd.read_parquet(tmp_path / "audits" / "final" / "summary.parquet")
    crossed = summary[summary["partition"] == "site×camera"].set_index("group")
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    combos = (records["site"].astype(str) + "×" + records["camera"].astype(str)).value_counts()
    assert set(crossed.index) - {"(all)"} == set(combos.index)
    for group, size in combos.items():
        attacked = crossed.loc[group, "attacked"]
        assert crossed.loc[group, "size"] == size
        assert crossed.loc[group, "too_small"] == (attacked < 3) and (attacked >= 3) == np.isfinite(crossed.loc[group, "sigma"])
    groups = crossed.drop(index="(all)")["too_small"]
    assert groups.any() and not groups.all()   # both kinds of group occur, so the loop above tests both


def test_selecting_two_partitions_audits_their_intersection(make_config, tmp_path):
    from test_face_datasets import write_utkface

    write_utkface(tmp_path / "UTKFace")
    run(make_config("dataset=utkface", f"dataset.root={tmp_path / 'UTKFace'}", "partition=[race,gender]",
                    "estimator=[deepfool]", "logger=none", "trainer.max_epochs=1", "dataset.batch_size=8"))
    summary = pd.read_parquet(tmp_path / "audits" / "final" / "summary.parquet")
    assert {"class", "gender", "race", "race×gender"} == set(summary["partition"])
    assert (tmp_path / "figures" / "final_survival_race×gender.png").is_file()
