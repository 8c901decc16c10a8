"""Shared helpers: compose the project's Hydra config in tests, as lightning-hydra-template does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from robustness_bias.__main__ import experiment_as_choice
from robustness_bias.config.checks import checked
from robustness_bias.config.messages import composition_problem
from robustness_bias.config.rules import ConfigError
from robustness_bias.config.store import CONFIG_DIR

TAGS = ("first", "middle", "final")   # the audits of a training run

os.environ.setdefault("WANDB_SILENT", "true")
sys.path.insert(0, str(CONFIG_DIR.parent / "bench"))   # the benchmark scripts, importable as modules


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The job config for these overrides as the command line composes it, writing into ``output_dir``
    (no Hydra run folder)."""
    folder = [f"paths.output_dir={output_dir}"] if output_dir is not None else ["paths.output_dir=unused"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):   # the caller's overrides win
        return compose(config_name="config", overrides=[*folder, *experiment_as_choice(overrides)])


def config_problem(overrides: list[str]) -> str | None:
    """What the command line says (after ``robustness_bias: error:``) of the first bad setting among these
    overrides, found while composing or when the job starts; None when every setting holds."""
    try:
        checked(compose_config(overrides))
    except ConfigCompositionException as error:
        return composition_problem(error)
    except ConfigError as error:
        return str(error)
    return None


@pytest.fixture(autouse=True)
def isolated_process_state():
    """Each test starts from the process state the suite started with: a pipeline run turns on
    deterministic algorithms and sets Lightning's seed variables, the benches turn on cuDNN's
    autotuner; none of that may leak into whichever test happens to run next."""
    import torch

    environment = os.environ.copy()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    yield
    if os.environ != environment:
        os.environ.clear()
        os.environ.update(environment)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


@pytest.fixture
def make_config(tmp_path):
    """compose_config bound to a fresh output folder, with progress bars off for quiet logs."""

    def make(*overrides: str) -> DictConfig:
        return compose_config([*overrides, "audit.progress=false", "trainer.enable_progress_bar=false"], tmp_path)

    return make


@pytest.fixture
def wandb_logged(monkeypatch):
    """Every dict this test hands to W&B's ``Run.log``, merged (the last value of each key), while
    W&B still writes the run as usual."""
    from wandb.sdk.wandb_run import Run

    logged: dict = {}
    log = Run.log

    def spy(self, data, *args, **kwargs):
        logged.update(data)
        return log(self, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    return logged


class SlurmCluster:
    """The throwaway cluster of scripts/slurm-cluster: ``env`` is this process's environment with the cluster's
    ``SLURM_CONF`` (and no ``SLURM_*`` of a job this suite may itself run in)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
        self.env["SLURM_CONF"] = str(folder / "slurm.conf")

    def run(self, *command: str, check: bool = True):
        import subprocess

        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM cluster for the whole session (started once, by the first `slurm` test; stopped at the
    end). Skipped in one line where this machine cannot have one (no root, no apt, packages not installable);
    a cluster that fails to start otherwise fails the tests."""
    import subprocess

    script = Path(__file__).resolve().parent.parent / "scripts" / "slurm-cluster"
    folder = tmp_path_factory.mktemp("slurm")
    started = subprocess.run([str(script), "start", str(folder)], capture_output=True, text=True, timeout=900)
    if started.returncode == 3:
        pytest.skip(f"no SLURM cluster: {started.stderr.strip().splitlines()[-1]}")
    if started.returncode != 0:
        subprocess.run([str(script), "stop", str(folder)], capture_output=True, timeout=120)
        pytest.fail(f"scripts/slurm-cluster start failed:\n{started.stdout}{started.stderr}")
    yield SlurmCluster(folder)
    subprocess.run([str(script), "stop", str(folder)], capture_output=True, timeout=120)
