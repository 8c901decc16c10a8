"""Pre-flight: a sweep names every job's missing data and weights before its first job trains; ImageNet
weights are downloaded only when asked, into torch hub's cache, and only when their hash matches."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from robustness_bias.models import MissingWeights, squeezenet1_0, torchvision_models
from robustness_bias.models.torchvision_models import weights_problem
from robustness_bias.pipeline import run
from robustness_bias.preflight import sweep_jobs

NORM = {"mean": [0.5] * 3, "std": [0.5] * 3}
TORCHVISION = ["resnet50", "alexnet", "vgg19_bn", "densenet121", "squeezenet1_0"]


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def command(*arguments, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    return subprocess.run([sys.executable, "-m", "robustness_bias", *arguments], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)


@pytest.mark.parametrize(("overrides", "params"), [
    ([], None),
    (["model=logreg,cnn", "seed=0,1,2"], None),
    (["experiment=utk_race", "seed=range(0,3)", "hydra.sweep.dir=x"], {"model": "logreg,resnet50", "seed": "0,1"}),
    (["+extra=1,2", "~trainer.max_epochs", "tag='a,b'", "values=[1,2],[3]", "order=sort(3,1,2)"], {}),
])
def test_sweep_jobs_are_the_jobs_hydras_basic_sweeper_makes(overrides, params):
    """Our expansion (on Hydra's public override API) against the basic sweeper's own, an internal of Hydra's."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{key}={value}" for key, value in (params or {}).items()] + overrides
    assert sweep_jobs(overrides, params) == BasicSweeper.split_arguments(
        OverridesParser.create().parse_overrides(arguments), None)[0]


def test_a_sweep_stops_before_its_first_job_when_a_later_job_lacks_its_weights(tmp_path):
    sweep = tmp_path / "sweep"
    done = command("-m", "model=logreg,resnet18", "imagenet.pretrained=true", "dataset=synthetic", "dataset.channels=3",
                   "dataset.image_size=32", "estimator=[deepfool]", "logger=none", f"hydra.sweep.dir={sweep}",
                   tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "robustness_bias: error: 1 problem(s) would stop 2 job(s) of this sweep; none was started" in done.stderr
    assert "model resnet18 with model.pretrained=true needs its ImageNet weights" in done.stderr
    assert done.stderr.rstrip().endswith("[job(s) #1 model=resnet18]")
    assert not sweep.exists() or not any(p.is_dir() and not p.name.startswith(".") for p in sweep.iterdir())


def test_check_names_each_problem_once_with_the_jobs_it_stops(tmp_path):
    done = command("check", "+experiment=utk_race", f"dataset.root={tmp_path}/nowhere", tmp_path=tmp_path)
    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 + len(TORCHVISION), done.stderr
    [data] = [p for p in problems if "no such folder" in p]
    assert f"dataset.root={tmp_path}/nowhere: no such folder" in data
    assert data.endswith("[job(s) #0 model=logreg; #1 model=utk_classifier; #2 model=resnet50; #3 model=alexnet; "
                         "#4 model=vgg19_bn; #5 model=densenet121; #6 model=squeezenet1_0]")
    for name in TORCHVISION:
        assert sum(f"model {name} with model.pretrained=true" in p for p in problems) == 1, name
    fine = command("check", "+experiment=utk_race", f"dataset.root={tmp_path}", "imagenet.pretrained=false",
                   tmp_path=tmp_path)
    assert fine.returncode == 0 and "pre-flight: 7 job(s) can run" in fine.stdout, fine.stderr
    assert f"  #2 model=resnet50: data {tmp_path}; model from scratch" in fine.stdout.splitlines()


def test_check_lists_the_imagenet_weights_each_job_found(tmp_path):
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(b"looked up, never loaded by check")
    done = command("check", "dataset=synthetic", "model=resnet18", "imagenet.pretrained=true", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == (f"  #0: data built in (SyntheticDataModule); ImageNet weights "
                                           f"{hub / 'resnet18-f37072fd.pth'}")


def test_a_job_stops_for_its_weights_before_it_reads_its_data(make_config, tmp_path, empty_hub):
    with pytest.raises(MissingWeights, match="needs its ImageNet weights"):
        run(make_config("dataset=synthetic", "dataset.channels=3", "dataset.image_size=32", "model=resnet18",
                        "imagenet.pretrained=true", "estimator=[deepfool]", "logger=none"))
    assert not (tmp_path / "dataset.json").exists()


def test_download_is_opt_in_and_its_url_must_answer(empty_hub):
    offline = weights_problem("resnet18", pretrained=True, download=False, reachable=lambda url: None)
    assert "is not in torch hub's cache" in offline and "imagenet.download=true fetches them" in offline
    assert weights_problem("resnet18", pretrained=True, download=True, reachable=lambda url: None) is None
    unreachable = weights_problem("resnet18", pretrained=True, download=True, reachable=lambda url: "URLError: offline")
    assert "imagenet.download=true cannot reach https://download.pytorch.org/models/resnet18-f37072fd.pth " \
           "(URLError: offline)" in unreachable
    assert weights_problem("resnet18", pretrained=False, download=False) is None
    assert weights_problem("logreg", pretrained=True, download=False) is None


@pytest.fixture
def served_weights(tmp_path, monkeypatch, empty_hub):
    """squeezenet1_0's weights (random, standing in for ImageNet's) served from a file URL; ``serve(prefix)``
    points the download at them under a file name carrying that hash prefix."""
    saved = torchvision.models.squeezenet1_0().state_dict()
    source = tmp_path / "served.pth"
    torch.save(saved, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    def serve(prefix: str):
        cached = empty_hub / f"squeezenet1_0-{prefix}.pth"
        monkeypatch.setattr(torchvision_models, "hub_file", lambda name: (source.as_uri(), cached))
        return cached

    return saved, digest, serve


def test_download_fills_the_hub_cache_and_the_model_loads_it(served_weights):
    saved, digest, serve = served_weights
    cached = serve(digest[:8])
    model = squeezenet1_0(input_shape=(3, 32, 32), num_classes=10, normalization=NORM, pretrained=True, download=True)
    assert cached.is_file()
    torch.testing.assert_close(model[1].features[0].weight, saved["features.0.weight"], rtol=0, atol=0)


def test_a_download_whose_hash_differs_is_refused_and_left_out_of_the_cache(served_weights):
    _, digest, serve = served_weights
    cached = serve("0" * 8 if not digest.startswith("0" * 8) else "1" * 8)
    with pytest.raises(MissingWeights, match=r"imagenet\.download=true could not fetch it \(RuntimeError: invalid hash"):
        squeezenet1_0(input_shape=(3, 32, 32), num_classes=10, normalization=NORM, pretrained=True, download=True)
    assert not cached.exists()
