"""Files a user or a run folder supplies: checkpoints never run code, and labels.csv never leads
outside its folder nor silently changes the data."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustness_bias.checkpoints import UnsafeCheckpoint
from robustness_bias.models import logreg
from robustness_bias.config.rules import ConfigError
from robustness_bias.pipeline import run

TINY = ["logger=none", "dataset=synthetic", "dataset.n_samples=200", "partition=group", "estimator=[exact]",
          "trainer.max_epochs=1"]


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted_checkpoint(path, marker):
    """Real weights of the synthetic job's model, with a payload under an extra key."""
    weights = logreg((1, 8, 8), 2, {"mean": [0.5], "std": [0.5]}).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()}, "extra": Payload(marker)}, path)
    return path


def test_a_crafted_model_checkpoint_is_refused_and_runs_nothing(make_config, tmp_path):
    path = crafted_checkpoint(tmp_path / "weights.ckpt", tmp_path / "MARKER")
    with pytest.raises(ConfigError, match=rf"^{path} holds an object of posix\.system: refused.*Fix: ") as error:
        run(make_config(*TINY, "mode=audit", f"model.checkpoint={path}"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "MARKER").exists()
    assert not (tmp_path / "audits").exists()


def test_a_planted_last_checkpoint_is_refused_on_the_command_line_and_runs_nothing(tmp_path):
    out = tmp_path / "run"
    planted = crafted_checkpoint((out / "checkpoints").mkdir(parents=True) or out / "checkpoints" / "last.ckpt",
                                 tmp_path / "MARKER")
    done = subprocess.run([sys.executable, "-m", "robustness_bias", *TINY, f"hydra.run.dir={out}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"robustness_bias: error: {planted} holds an object of posix.system")
    assert f"Fix: delete it (rm {planted})" in lines[0]
    assert not (tmp_path / "MARKER").exists()
    assert planted.is_file() and not (out / "audits").exists()   # left for someone to look at, nothing trained


def test_the_tools_own_checkpoint_loads_weights_only_and_resumes(make_config, tmp_path, monkeypatch):
    run(make_config(*TINY))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["epochs_completed"] == 1 and saved["settings_hash"]
    (tmp_path / "result.json").unlink()
    load, calls = torch.load, []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only")) or load(*a, **k))
    run(make_config(*TINY))
    assert calls == [True, True]   # ours, to check the settings, then Lightning's resume


def test_torchscript_given_a_pickle_or_weights_says_so_in_one_line(make_config, tmp_path):
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    with pytest.raises(ConfigError, match=r"model\.pkl is no TorchScript file: it is not a zip archive.*Fix: ") as error:
        run(make_config(*TINY, "mode=audit", "model=torchscript", f"model.checkpoint={pickled}"))
    assert "\n" not in str(error.value) and "miniz" not in str(error.value)
    weights = tmp_path / "weights.pt"
    torch.save(logreg((1, 8, 8), 2, {"mean": [0.5], "std": [0.5]}).state_dict(), weights)
    with pytest.raises(ConfigError, match=r"weights\.pt is no TorchScript file: it holds no scripted model"):
        run(make_config(*TINY, "mode=audit", "model=torchscript", f"model.checkpoint={weights}"))


def test_a_torchscript_file_given_as_weights_names_model_torchscript(make_config, tmp_path):
    scripted = tmp_path / "model.pt"
    torch.jit.script(logreg((1, 8, 8), 2, {"mean": [0.5], "std": [0.5]})).save(str(scripted))
    with pytest.raises(ConfigError, match=r"is a TorchScript model\. Fix: pass model=torchscript"):
        run(make_config(*TINY, "mode=audit", f"model.checkpoint={scripted}"))


def test_load_checkpoint_refuses_any_pickled_object(tmp_path):
    from robustness_bias.checkpoints import load_checkpoint

    path = tmp_path / "x.pt"
    torch.save({"w": torch.ones(2), "extra": Payload(tmp_path / "MARKER")}, path)
    with pytest.raises(UnsafeCheckpoint, match=r"x\.pt holds an object of posix\.system.*Fix: do not"):
        load_checkpoint(path, "do not")
    assert not (tmp_path / "MARKER").exists()


PICKLES = {"plain data": lambda marker: pickle.dumps({"weights": [1.0, 2.0]}),
           "a payload": lambda marker: pickle.dumps({"weights": [1.0], "extra": Payload(marker)})}


@pytest.mark.parametrize("content", PICKLES, ids=list(PICKLES))
def test_a_pickle_as_imagenet_weights_is_one_line_naming_the_file_and_the_fix(make_config, tmp_path, content):
    pickled = tmp_path / "weights.pkl"
    pickled.write_bytes(PICKLES[content](tmp_path / "MARKER"))
    with pytest.raises(ConfigError, match=rf"^model\.weights_path={pickled} is a plain pickle \(pickle\.dump\), not a "
                                          r"file torch\.save wrote\. Fix: pass model\.weights_path=/path/to/resnet18-"
                                          r"\w+\.pth, torchvision's file from https://") as error:
        run(make_config(*TINY, "dataset.channels=3", "model=resnet18", "imagenet.pretrained=true",
                        f"model.weights_path={pickled}"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize(("content", "named"), [
    (pickle.dumps({"weights": [1.0, 2.0]}), r"is a plain pickle \(pickle\.dump\), not a file torch\.save wrote"),
    (b"epoch,loss\n1,0.5\n", "is neither a torch.save file nor a pickle"),
    (b"", "is empty"),
    (b"PK\x03\x04" + bytes(100), "is a zip archive that torch.save did not write, or a damaged one")],
    ids=["pickle", "text", "empty", "zip"])
def test_a_file_torch_cannot_read_as_checkpoint_is_one_line(make_config, tmp_path, content, named):
    path = tmp_path / "model.ckpt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^model\.checkpoint={path} {named}\. Fix: point model\.checkpoint at a "
                                          r"Lightning checkpoint or a state_dict saved with torch\.save") as error:
        run(make_config(*TINY, "mode=audit", f"model.checkpoint={path}"))
    assert "\n" not in str(error.value)


def test_torch_before_2_6_reads_no_checkpoint(make_config, tmp_path, monkeypatch):
    """torch < 2.6 can be made to run code under weights_only=True (CVE-2025-32434)."""
    from robustness_bias.checkpoints import load_checkpoint

    path = tmp_path / "weights.pt"
    torch.save(logreg((1, 8, 8), 2, {"mean": [0.5], "std": [0.5]}).state_dict(), path)
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu121")
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    refused = (rf"^{path} not read: torch 2\.5\.1\+cu121 is older than 2\.6, .*\(CVE-2025-32434\)\. "
               r"Fix: pip install 'torch>=2\.6' 'torchvision>=0\.21'$")
    with pytest.raises(UnsafeCheckpoint, match=refused):
        load_checkpoint(path, "unused")
    with pytest.raises(ConfigError, match=r"torch 2\.5\.1\+cu121 is older than 2\.6") as error:
        run(make_config(*TINY, "mode=audit", f"model.checkpoint={path}"))
    assert "\n" not in str(error.value) and loads == []


def test_the_package_requires_torch_2_6_and_torchvision_0_21():
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"torch>=2.6,' in text and '"torchvision>=0.21,' in text
