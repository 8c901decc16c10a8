"""Spreading an audit: DDP ranks and sweep-job shards each audit a part, and the parts add up exactly."""

import json
import logging
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import TAGS, compose_config
from robustness_bias.config.rules import ConfigError
from robustness_bias.records import merge_shards
from robustness_bias.pipeline import run
from robustness_bias.report.shards import merge_sharded_jobs
from robustness_bias.report.jobs import find_jobs

JOB = ["estimator=[exact,deepfool,rs]", "estimator.rs.n=1000", "logger=none", "trainer.max_epochs=2",
       "audit.progress=false", "trainer.enable_progress_bar=false"]


def tables(job, tag):
    return (pd.read_parquet(job / "audits" / tag / "records.parquet"),
            pd.read_parquet(job / "audits" / tag / "summary.parquet"))


def test_merged_shards_equal_the_unsharded_audit(tmp_path):
    run(compose_config(JOB, tmp_path / "whole"))
    for shard in range(3):
        run(compose_config([*JOB, f"audit.shard={shard}", "audit.num_shards=3"], tmp_path / "sweep" / str(shard)))
    sizes = [len(pd.read_parquet(tmp_path / "sweep" / str(i) / "audits" / "final" / "records.parquet"))
             for i in range(3)]
    assert max(sizes) - min(sizes) <= 3 and sum(sizes) == len(tables(tmp_path / "whole", "final")[0])

    merged = merge_sharded_jobs(find_jobs([tmp_path / "sweep"]))
    assert [job.name for job in merged] == [f"merged-{json.loads((tmp_path / 'whole' / 'result.json').read_text())['settings_hash']}"]
    for tag in TAGS:
        for ours, whole in zip(tables(merged[0], tag), tables(tmp_path / "whole", tag)):
            pd.testing.assert_frame_equal(ours, whole)
    result = json.loads((merged[0] / "result.json").read_text())
    # equal up to how batched kernels round: a shard's pool holds other rows than the whole audit's (docs/benchmarks.md)
    assert result["sigma"] == pytest.approx(json.loads((tmp_path / "whole" / "result.json").read_text())["sigma"], rel=1e-6)
    written = {path: path.stat().st_mtime_ns for path in merged[0].rglob("*.parquet")}
    assert merge_sharded_jobs(find_jobs([tmp_path / "sweep"])) == merged
    assert {path: path.stat().st_mtime_ns for path in merged[0].rglob("*.parquet")} == written, "not merged again"
    later = (merged[0] / "result.json").stat().st_mtime_ns + 1_000_000_000   # whatever the clock's resolution
    os.utime(tmp_path / "sweep" / "2" / "result.json", ns=(later, later))   # a shard rerun after the merge: merge anew
    merge_sharded_jobs(find_jobs([tmp_path / "sweep"]))
    assert {path: path.stat().st_mtime_ns for path in merged[0].rglob("*.parquet")} != written
    shard = pd.read_parquet(tmp_path / "sweep" / "1" / "audits" / "final" / "records.parquet")
    assert (shard["shard"] == "1/3").all()


def test_a_shard_and_the_whole_audit_never_stand_in_for_each_other(tmp_path):
    first = run(compose_config([*JOB, "audit.shard=0", "audit.num_shards=2"], tmp_path))
    assert run(compose_config([*JOB, "audit.shard=0", "audit.num_shards=2"], tmp_path))["skipped"]
    with pytest.raises(ConfigError, match="holds a finished job of other settings"):
        run(compose_config(JOB, tmp_path))   # the whole audit neither reuses nor overwrites the shard's folder
    for tag in TAGS:
        assert (pd.read_parquet(tmp_path / "audits" / tag / "records.parquet")["shard"] == "0/2").all()
    whole = run(compose_config(JOB, tmp_path / "whole"))
    assert "skipped" not in whole and whole["settings_hash"] == first["settings_hash"]
    for tag in TAGS:   # every audit of the whole job is there
        records = pd.read_parquet(tmp_path / "whole" / "audits" / tag / "records.parquet")
        assert "shard" not in records and len(records) == 360 * 2 + 72


def test_sharded_audits_of_a_checkpoint_merge_with_the_whole_test_accuracy(tmp_path):
    run(compose_config(JOB, tmp_path / "trained"))
    audit = [*JOB, "mode=audit", f"model.checkpoint={tmp_path / 'trained' / 'checkpoints' / 'last.ckpt'}"]
    whole = run(compose_config(audit, tmp_path / "whole"))
    for shard in range(2):
        run(compose_config([*audit, f"audit.shard={shard}", "audit.num_shards=2"], tmp_path / "sweep" / str(shard)))
    merged, = merge_sharded_jobs(find_jobs([tmp_path / "sweep"]))
    result = json.loads((merged / "result.json").read_text())
    assert result["test_accuracy"] == pytest.approx(whole["test_accuracy"])
    assert result["sigma"] == pytest.approx(whole["sigma"], rel=1e-6)   # up to how batched kernels round
    pd.testing.assert_frame_equal(*(tables(job, "final")[0] for job in (merged, tmp_path / "whole")))
    # the accuracy is the whole test set's, also where every estimator measures only some of it
    thinned = run(compose_config([*audit, *(f"audit.plan.{name}.every_nth=7" for name in ("exact", "deepfool", "rs"))],
                                 tmp_path / "thinned"))
    records, _ = tables(tmp_path / "thinned", "final")
    assert records["sample_index"].nunique() < 60
    assert thinned["test_accuracy"] == whole["test_accuracy"] != records.drop_duplicates("sample_index")["correct"].mean()


def test_a_missing_or_duplicated_shard_is_an_error():
    records = pd.DataFrame({"estimator": pd.Categorical(["e"] * 4), "sample_index": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match=r"shard\(s\) \[1\] of 2 are missing.*audit.shard=i audit.num_shards=2"):
        merge_shards({0: records.iloc[::2]}, 2)
    with pytest.raises(ValueError, match="appear in more than one shard"):
        merge_shards({0: records.iloc[:3], 1: records.iloc[2:]}, 2)
    pd.testing.assert_frame_equal(merge_shards({0: records.iloc[::2], 1: records.iloc[1::2]}, 2), records)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gathers_the_records_of_a_single_process_audit(tmp_path):
    odd = [*JOB, "dataset.test_fraction=0.2005"]   # 361 test images: the two ranks' shares differ by one
    ddp = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "robustness_bias", f"paths.output_dir={ddp}", f"hydra.run.dir={ddp}",
                           "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *odd],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (ddp / "train_ddp_process_1.log").is_file(), "a second process ran"

    single = tmp_path / "single"
    run(compose_config([*odd, "mode=audit", f"model.checkpoint={ddp / 'checkpoints' / 'last.ckpt'}"], single))
    ours, alone = (pd.read_parquet(job / "audits" / "final" / "records.parquet") for job in (ddp, single))
    assert not ours.duplicated(["estimator", "sample_index"]).any()
    assert ours.groupby("estimator", observed=True).size().to_dict() == {"exact": 361, "deepfool": 361, "rs": 73}
    pd.testing.assert_frame_equal(ours.drop(columns="settings_hash"), alone.drop(columns="settings_hash"))
    # trainer.test under DDP counts each test image once, as the single process's audit does
    accuracy = [json.loads((job / "result.json").read_text())["test_accuracy"] for job in (ddp, single)]
    assert accuracy[0] == pytest.approx(accuracy[1], abs=1e-6)


def test_projection_arithmetic_by_hand():
    import pipeline as bench

    row = {"train_img_s": 17069 * 15 / 3600, "deepfool_img_s": 4742 * 3 / 3600, "cw_img_s": 4742 * 3 / 7200,
           "rs_img_s": 1.0, "cw_queries": 250.0, "cw_budget_queries": 1000}
    hours = bench.projected_hours({**row, "rs_n": 100_000})
    assert hours["train_h"] == pytest.approx(1) and hours["deepfool_h"] == pytest.approx(1)
    assert hours["cw_h"] == pytest.approx(2)
    assert hours["cw_h_at_budget"] == pytest.approx(8)   # a quarter of the budget spent in 2 h
    # 2 audits × ⌈4742 / 5⌉ = 949 images, each (100,000 + 100) / (100,000 + 100) s at 1 image/s
    assert hours["rs_h"] == pytest.approx(2 * 949 / 3600)
    # timed at N = 900 (+ N0 = 100) copies, scaled to N = 100,000 (+ 100)
    assert bench.projected_hours({**row, "rs_n": 900})["rs_h"] == pytest.approx(2 * 949 * 100.1 / 3600)


def test_bench_pipeline_prints_rates_and_the_projection(capsys, caplog):
    import pipeline as bench

    with caplog.at_level(logging.WARNING, logger="robustness_bias.estimators.graphs"):
        table = bench.main(["--models", "utk_classifier", "--image-size", "16", "--device", "cpu", "--train-steps",
                            "2", "--audit-images", "4", "--rs-n", "50", "--batch-size", "16", "--cuda-graphs"])
    printed = capsys.readouterr().out   # on a CPU the graphed attacks run eagerly: the flag's path, not its speed
    assert "Projected hours for the UTKFace grid" in printed and "grid total:" in printed
    assert "attacks from CUDA graphs" in printed
    asked = {record.getMessage().split(":")[0] for record in caplog.records if "cuda_graphs=true" in record.getMessage()}
    assert asked == {"deepfool", "cw"}   # both attacks were built with cuda_graphs
    assert list(table["model"]) == ["utk_classifier"]
    assert (table[["train_img_s", "deepfool_img_s", "cw_img_s", "rs_img_s"]] > 0).all(axis=None)
    assert "rs_batch" in printed and "floor_batch" in printed   # smoothing ran at the batch its floor was measured at
    # no more than one call's copies: 4 images × the larger of N0 (100, the default) and N (50)
    assert table["rs_batch"].iloc[0] == table["floor_batch"].iloc[0] <= 4 * 100
    assert "with every CW run spending its whole budget" in printed
    assert 0 < table["cw_queries"].iloc[0] <= table["cw_budget_queries"].iloc[0]
    assert table["total_h"].iloc[0] == pytest.approx(table[["train_h", "deepfool_h", "cw_h", "rs_h"]].iloc[0].sum())


@pytest.mark.slow
def test_compiled_channels_last_bf16_training_saves_plain_weights_that_reaudit_identically(tmp_path):
    fast = ["model=small_cnn", "estimator=[deepfool]", "logger=none", "trainer.max_epochs=1", "audit.progress=false",
            "trainer.enable_progress_bar=false", "module.channels_last=true", "module.compile=true",
            "trainer.precision=bf16-mixed"]
    result = run(compose_config(fast, tmp_path / "train"))
    assert result["training_precision"] == "bf16-mixed" and result["test_accuracy"] > 0.2   # chance is 0.1
    import torch

    keys = torch.load(tmp_path / "train" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(key.startswith("model.") and "_orig_mod" not in key for key in keys)
    checkpoint = tmp_path / "train" / "checkpoints" / "last.ckpt"
    run(compose_config([*fast[:-2], "mode=audit", f"model.checkpoint={checkpoint}"], tmp_path / "audit"))
    ours, again = (pd.read_parquet(tmp_path / job / "audits" / "final" / "records.parquet") for job in ("train", "audit"))
    pd.testing.assert_frame_equal(ours.drop(columns="settings_hash"), again.drop(columns="settings_hash"))


@pytest.mark.slow
def test_compiled_smoothing_certifies_the_same_radii():
    import torch

    from robustness_bias.estimators import RandomizedSmoothing
    from robustness_bias.models import small_cnn

    torch.manual_seed(0)
    model = small_cnn((1, 8, 8), 3, {"mean": [0.5], "std": [0.25]}).eval()
    x = torch.rand(6, 1, 8, 8)
    y = model(x).argmax(1)
    plain, compiled = (RandomizedSmoothing(n=3000, n0=50, forward_batch=500, compile=flag, sigma=0.5)
                       for flag in (False, True))
    expected = plain(model, x, y, index=torch.arange(6))
    ours = compiled(model, x, y, index=torch.arange(6))
    assert expected.success.any()
    torch.testing.assert_close(ours.distance, expected.distance, rtol=0, atol=0)
    assert compiled.forward_of(model) is compiled.forward_of(model), "compiled once per model"
    with torch.no_grad():   # training moves the weights in place between audits: the compiled forward follows
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter), alpha=0.05)
    moved = plain(model, x, y, index=torch.arange(6))
    assert not torch.equal(moved.distance, expected.distance), "the new weights give other radii"
    torch.testing.assert_close(compiled(model, x, y, index=torch.arange(6)).distance, moved.distance, rtol=0, atol=0)
