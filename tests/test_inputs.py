"""Inputs that would give a traceback from deep inside PyTorch, or a quietly different audit: each is named in
one line with its fix before any estimator runs (api.py, auditing/logits.py), or handled where that is sound."""

import copy
import logging
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from conftest import compose_config
from test_api import digits, linear, test_digits  # noqa: F401 (fixtures)
from test_audit_mode import TINY
from robustness_bias import audit
from robustness_bias.auditing.logits import NotLogits, check_logits
from robustness_bias.estimators import RandomizedSmoothing
from robustness_bias.models import logreg
from robustness_bias import pipeline
from robustness_bias.pipeline import run

LOGGER = "robustness_bias.auditing.logits"


def checked(caplog) -> list[str]:
    """What the check logged."""
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


@pytest.mark.parametrize("form", [lambda model: model, torch.jit.script], ids=["module", "torchscript"])
def test_the_api_refuses_a_model_that_outputs_probabilities(linear, test_digits, form):
    images, labels = test_digits
    with pytest.raises(NotLogits, match=r"^the model outputs probabilities \(every row ≥ 0, summing to 1, on the "
                                        r"first 8 images\).*Fix: audit the model without its final softmax"):
        audit(form(nn.Sequential(linear, nn.Softmax(1)).eval()), images, labels, estimators="deepfool", progress=False)


def test_log_probabilities_are_audited_as_the_logits_they_equal_with_a_warning(linear, test_digits, caplog):
    images, labels = test_digits
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        logits = audit(linear, images, labels, estimators=["deepfool", "fmn"], progress=False).records
    assert not checked(caplog)   # logits: nothing to say
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        logged = audit(nn.Sequential(linear, nn.LogSoftmax(1)), images, labels, estimators=["deepfool", "fmn"],
                       progress=False).records
    warning, = checked(caplog)
    assert warning.startswith("the model outputs log-probabilities (every row's logsumexp is 0, on the first 8 images)")
    assert "\n" not in warning and "audited as the logits they equal" in warning
    assert (logged["correct"] == logits["correct"]).all() and (logged["success"] == logits["success"]).all()
    torch.testing.assert_close(torch.tensor(logged["distance"].to_numpy()),
                               torch.tensor(logits["distance"].to_numpy()), rtol=1e-4, atol=0, equal_nan=True)


def test_smoothing_alone_audits_probabilities_with_a_warning(linear, test_digits, caplog):
    """Smoothing counts the argmax, which a softmax keeps: the same records as the logits'."""
    images, labels = test_digits
    smoothing = {"estimators": {"rs": RandomizedSmoothing(n=200, n0=20)}, "every_nth": 1, "progress": False}
    logits = audit(linear, images, labels, **smoothing).records
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        probabilities = audit(nn.Sequential(linear, nn.Softmax(1)), images, labels, **smoothing).records
    warning, = checked(caplog)
    assert warning.startswith("the model outputs probabilities") and "smoothing counts only their argmax" in warning
    pd.testing.assert_frame_equal(probabilities.drop(columns="weights_hash"), logits.drop(columns="weights_hash"))


def test_the_check_reads_every_row_and_ignores_what_says_nothing():
    probabilities = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    with pytest.raises(NotLogits, match=r"and the attacks \(deepfool, cw\) need logits"):
        check_logits(probabilities, ["deepfool", "cw"])
    check_logits(torch.tensor([[0.2, 0.8], [0.5, 0.6]]), ["cw"])             # a row that is no probability: logits
    check_logits(torch.tensor([[0.2, 0.8], [0.5, 0.5]]).log() + 1, ["cw"])   # shifted log-probabilities are logits
    check_logits(torch.ones(4, 1), ["cw"])                                    # one output: its softmax says nothing
    with pytest.raises(NotLogits):
        check_logits(torch.cat([probabilities, torch.tensor([[float("nan"), 1.0]])]), ["cw"])   # NaN says nothing


CONV = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10)).eval()


@pytest.mark.parametrize(("change", "message"), [
    ({"device": "gpu"}, r"^device='gpu' cannot be used here \(.*\)\. Fix: device='cpu', or leave device out"),
    pytest.param({"device": "cuda"}, r"^device='cuda' cannot be used here \(.*\)\. Fix: device='cpu'",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ({"model": "float64"}, r"^the model holds float64 tensors, and the audit feeds it float32 images\. "
                           r"Fix: audit model\.float\(\)$"),
    ({"model": "bfloat16"}, r"^the model holds bfloat16 tensors.*Fix: audit model\.float\(\)$"),
    ({"X": "channels-last"}, r"^the images are laid out channels-last, \(H, W, C\) = \(8, 8, 1\): the model takes "
                             r"them only as \(C, H, W\)\. Fix: pass X\.permute\(0, 3, 1, 2\)")],
    ids=["unknown_device", "cuda_without_gpu", "float64_model", "bfloat16_model", "channels_last_layout"])
def test_the_api_names_a_wrong_device_precision_or_layout_in_one_line(linear, test_digits, change, message):
    images, labels = test_digits
    model = CONV if change.get("X") else linear
    if change.get("model"):
        model = copy.deepcopy(linear).to(getattr(torch, change["model"]))
    arguments = {"X": images.permute(0, 2, 3, 1) if change.get("X") else images, "y": labels,
                 "estimators": "deepfool", "progress": False, **({"device": change["device"]} if "device" in change else {})}
    with pytest.raises(ValueError, match=message) as raised:
        audit(model, **arguments)
    assert "\n" not in str(raised.value)
    assert all(p.dtype == torch.float32 for p in linear.parameters())


def test_float64_images_and_channels_last_memory_are_audited_as_they_are():
    """Images of another float type are measured in float32 (pixels in [0,1] lose nothing that matters);
    a batch in channels-last memory holds the same (N, C, H, W) images."""
    torch.manual_seed(0)
    images = torch.rand(48, 3, 8, 8)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    labels = model(images).argmax(1).numpy()
    plain = audit(model, images, labels, estimators="deepfool", progress=False).records
    for same in (images.double(), images.contiguous(memory_format=torch.channels_last)):
        pd.testing.assert_frame_equal(audit(model, same, labels, estimators="deepfool", progress=False).records, plain)


# ---------------------------------------------------------------- the command line: mode=audit

JOB = [*[o for o in TINY if not o.startswith("estimator")], "estimator=[deepfool]"]


def saved_torchscript(folder, head: nn.Module | None) -> str:
    """A logistic regression for the synthetic data, with ``head`` after it, saved as a TorchScript file."""
    datamodule = instantiate(compose_config(JOB).dataset)
    datamodule.setup()
    torch.manual_seed(0)
    model = logreg(datamodule.input_shape, datamodule.num_classes, datamodule.normalization)
    path = folder / "model.pt"
    torch.jit.script(nn.Sequential(model, *([head] if head is not None else [])).eval()).save(str(path))
    return str(path)


def test_mode_audit_refuses_a_model_that_outputs_probabilities(make_config, tmp_path):
    path = saved_torchscript(tmp_path, nn.Softmax(1))
    with pytest.raises(NotLogits, match="^the model outputs probabilities.*Fix: audit the model without its final softmax"):
        run(make_config(*JOB, "mode=audit", "model=torchscript", f"model.checkpoint={path}"))
    assert not (tmp_path / "audits").exists() or not any((tmp_path / "audits").rglob("*.parquet"))


@pytest.mark.parametrize(("head", "warned"), [(None, False), (nn.LogSoftmax(1), True)], ids=["logits", "log_softmax"])
def test_mode_audit_warns_of_log_probabilities_only(make_config, tmp_path, caplog, head, warned):
    path = saved_torchscript(tmp_path, head)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(make_config(*JOB, "mode=audit", "model=torchscript", f"model.checkpoint={path}"))
    assert [message[:40] for message in checked(caplog)] == (["the model outputs log-probabilities (eve"] if warned else [])


def test_mode_train_spends_nothing_on_the_check(make_config, monkeypatch):
    """The models trained here output logits (they are trained on the cross-entropy of their outputs)."""
    def unexpected(*args, **kwargs):
        raise AssertionError("mode=train checked the model's outputs")

    monkeypatch.setattr(pipeline, "check_outputs", unexpected)
    assert run(make_config(*JOB, "trainer.max_epochs=1"))["mode"] == "train"


def test_the_command_line_names_a_probability_model_in_one_line(tmp_path):
    path = saved_torchscript(tmp_path, nn.Softmax(1))
    done = subprocess.run([sys.executable, "-m", "robustness_bias", *JOB, "mode=audit", "model=torchscript",
                           f"model.checkpoint={path}", f"hydra.run.dir={tmp_path / 'job'}"],
                          capture_output=True, text=True, timeout=300, env=os.environ)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("robustness_bias: error: the model outputs probabilities") and "Fix: " in lines[-1]
    assert "Traceback" not in done.stderr
