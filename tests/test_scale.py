"""Spreading an audit: DDP ranks and sweep-job shards each audit a part, and the parts add up exactly."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import compose_config
from robustness_bias.audit import merge_shards
from robustness_bias.pipeline import run
from robustness_bias.reports.shards import merge_sharded_jobs
from robustness_bias.reports.tables import find_jobs

TAGS = ("first", "middle", "final")
JOB = ["estimator=[exact,deepfool,rs]", "estimator.rs.n=1000", "logger=none", "trainer.max_epochs=2",
       "audit.progress=false", "+trainer.enable_progress_bar=false"]


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
    assert result["sigma"] == json.loads((tmp_path / "whole" / "result.json").read_text())["sigma"]
    assert merge_sharded_jobs(find_jobs([tmp_path / "sweep"])) == merged, "merging again gives the same job"


def test_a_missing_or_duplicated_shard_is_an_error():
    records = pd.DataFrame({"estimator": pd.Categorical(["e"] * 4), "sample_index": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match=r"shard\(s\) \[1\] of 2 are missing.*audit.shard=i audit.num_shards=2"):
        merge_shards({0: records.iloc[::2]}, 2)
    with pytest.raises(ValueError, match="appear in more than one shard"):
        merge_shards({0: records.iloc[:3], 1: records.iloc[2:]}, 2)
    pd.testing.assert_frame_equal(merge_shards({0: records.iloc[::2], 1: records.iloc[1::2]}, 2), records)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gathers_the_records_of_a_single_process_audit(tmp_path):
    env = {**os.environ, "WANDB_SILENT": "true"}
    ddp = tmp_path / "ddp"
    done = subprocess.run([sys.executable, "-m", "robustness_bias", f"paths.output_dir={ddp}", f"hydra.run.dir={ddp}",
                           "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *JOB],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (ddp / "train_ddp_process_1.log").is_file(), "a second process ran"

    single = tmp_path / "single"
    run(compose_config([*JOB, "mode=audit", f"model.checkpoint={ddp / 'checkpoints' / 'last.ckpt'}"], single))
    ours, alone = (pd.read_parquet(job / "audits" / "final" / "records.parquet") for job in (ddp, single))
    assert not ours.duplicated(["estimator", "sample_index"]).any()
    assert ours.groupby("estimator", observed=True).size().to_dict() == {"exact": 360, "deepfool": 360, "rs": 72}
    pd.testing.assert_frame_equal(ours.drop(columns="settings_hash"), alone.drop(columns="settings_hash"))
