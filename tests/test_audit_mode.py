"""mode=audit: audit a model that was trained elsewhere, with the same records as a training run's."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from robustness_bias.models import logreg
from robustness_bias.config.rules import ConfigError
from robustness_bias.pipeline import run

TINY = ["dataset=synthetic", "dataset.n_samples=300", "partition=group", "estimator=[exact,deepfool,rs]",
        "estimator.rs.n=500", "estimator.rs.n0=20", "logger=none"]


def _final_distances(folder):
    records = pd.read_parquet(folder / "audits" / "final" / "records.parquet")
    return records[["sample_index", "estimator", "prediction", "distance", "success"]].reset_index(drop=True)


@pytest.fixture
def trained(make_config, tmp_path):
    run(make_config(*TINY, "trainer.max_epochs=2"))
    return tmp_path


def test_reauditing_a_checkpoint_gives_the_training_runs_final_distances(trained, tmp_path_factory):
    from conftest import compose_config

    out = tmp_path_factory.mktemp("audit")
    result = run(compose_config([*TINY, "mode=audit", f"model.checkpoint={trained / 'checkpoints' / 'last.ckpt'}",
                                 "audit.progress=false"], out))
    pd.testing.assert_frame_equal(_final_distances(out), _final_distances(trained))
    assert result["mode"] == "audit" and not (out / "checkpoints").exists()
    epoch = pd.read_parquet(out / "audits" / "final" / "records.parquet")["epoch"].iloc[0]
    assert epoch == pd.read_parquet(trained / "audits" / "final" / "records.parquet")["epoch"].iloc[0] == 2


def test_a_plain_state_dict_works_too(trained, tmp_path_factory):
    from conftest import compose_config

    state = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    path = tmp_path_factory.mktemp("weights") / "weights.pt"
    torch.save({k.removeprefix("model."): v for k, v in state.items()}, path)
    out = tmp_path_factory.mktemp("audit")
    run(compose_config([*TINY, "mode=audit", f"model.checkpoint={path}", "audit.progress=false"], out))
    pd.testing.assert_frame_equal(_final_distances(out), _final_distances(trained))


def test_a_torchscript_model_without_a_config_is_audited_on_an_image_folder(make_config, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append({"path": f"{i}.png", "label": ["cat", "dog"][i % 2], "camera": ["a", "b"][i % 3 == 0]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    torch.manual_seed(0)
    # linear, so its predictions vary over noise images and change with any other scaling of the pixels
    scripted = torch.jit.script(logreg((3, 8, 8), 2, {"mean": [0.5] * 3, "std": [0.25] * 3}).eval())
    scripted.save(str(tmp_path / "model.pt"))
    result = run(make_config("mode=audit", "model=torchscript", f"model.checkpoint={tmp_path / 'model.pt'}",
                             "dataset=image_folder", f"dataset.root={root}", "+partition.by=[camera]",
                             "estimator=[deepfool]", "logger=none"))
    records = pd.read_parquet(tmp_path / "audits" / "final" / "records.parquet")
    assert len(records) == 8 and set(records["camera"]) <= {"a", "b"}
    assert records.loc[records["correct"], "success"].all()
    # the audit fed the scripted model the files' own pixels in [0,1] (its normalization is its own)
    paths = sorted(row["path"] for row in rows)   # the table's order
    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(root / paths[i]))).permute(2, 0, 1) / 255
                          for i in records["sample_index"]])
    with torch.no_grad():
        assert records["prediction"].tolist() == scripted(pixels).argmax(1).tolist()
    assert records["prediction"].nunique() == 2
    assert result["test_accuracy"] == pytest.approx(records["correct"].mean())


def test_audit_mode_needs_a_checkpoint(make_config):
    with pytest.raises(ConfigError, match=r"mode=audit needs a trained model.*model\.checkpoint="):
        run(make_config(*TINY, "mode=audit"))
    with pytest.raises(ConfigError, match=r"model\.checkpoint=/nowhere/x\.ckpt: no such file"):
        run(make_config(*TINY, "mode=audit", "model.checkpoint=/nowhere/x.ckpt"))
