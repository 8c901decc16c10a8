"""Files a user or a run folder supplies: checkpoints never run code, and labels.csv never leads
outside its folder nor silently changes the data."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from robustness_bias.checkpoints import UnsafeCheckpoint
from robustness_bias.models import logreg
from robustness_bias.pipeline import ConfigError, run

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
