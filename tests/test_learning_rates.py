"""Learning rates per model family: optim.lr takes its model's, each model its family's (learning_rates), and
experiments set them for their data; only optim.lr, where they end up, is in a job's fingerprint."""

from pathlib import Path

import pytest

from conftest import compose_config
from robustness_bias.config.checks import checked
from robustness_bias.config.fingerprint import job_fingerprint
from robustness_bias.config.store import CONFIG_DIR

MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))
FAMILY = {"logreg": "linear", "alexnet": "torchvision", "vgg19_bn": "torchvision", "resnet18": "torchvision",
          "resnet50": "torchvision", "densenet121": "torchvision", "squeezenet1_0": "torchvision"}


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_at_its_familys_rate(model):
    cfg = compose_config([f"model={model}", "learning_rates.linear=0.3", "learning_rates.cnn=0.2",
                          "learning_rates.torchvision=0.1"])
    assert cfg.optim.lr == {"linear": 0.3, "cnn": 0.2, "torchvision": 0.1}[FAMILY.get(model, "cnn")]


@pytest.mark.parametrize(("overrides", "rate"), [
    ([], 0.05),                                                  # the bundled digits
    (["model=small_cnn"], 0.05),
    (["model=resnet18"], 0.01),
    (["experiment=cifar10", "model=logreg"], 0.005),             # 3×32×32: 0.05 overshoots
    (["experiment=cifar10", "model=deep_cnn"], 0.05),
    (["experiment=cifar10", "model=resnet50"], 0.05),
    (["experiment=utk_race", "model=logreg"], 0.01),
    (["experiment=utk_race", "model=utk_classifier"], 0.01),
    (["experiment=cifar10", "model=logreg", "optim.lr=0.02"], 0.02)])   # one rate for every model
def test_the_rates_the_experiments_train_with(overrides, rate):
    assert compose_config(overrides).optim.lr == rate


def test_only_the_rate_a_job_trains_with_is_in_its_fingerprint():
    default = job_fingerprint(checked(compose_config([])))
    assert job_fingerprint(checked(compose_config(["learning_rates.cnn=0.3", "learning_rates.torchvision=0.3"]))) == default
    assert job_fingerprint(checked(compose_config(["learning_rates.linear=0.3", "optim.lr=0.05"]))) == default
    assert job_fingerprint(checked(compose_config(["learning_rates.linear=0.3"]))) != default


def test_a_rate_that_is_not_positive_is_refused():
    from conftest import config_problem

    assert config_problem(["learning_rates.linear=-1"]).startswith("model.lr=-1: must be a positive number")
