"""Every impossible setting is one line on the command line, exit code 2, before any data is read."""

import subprocess
import sys

import pytest
from conftest import CONFIG_DIR, compose_config

from robustness_bias.settings import ConfigError, check_settings

BAD_SETTINGS = [("estimator.rs.n=-5", "must be a whole number ≥ 1"),
                ("estimator.rs.alpha=2", "must lie strictly between 0 and 1"),
                ("estimator.rs.sigma=0", "must be a positive number"),
                ("estimator.rs.forward_batch=0", "must be a whole number ≥ 1, or null to measure the fastest"),
                ("estimator.deepfool.steps=0", "must be a whole number ≥ 1"),
                ("optim.lr=-1", "must be a positive number"),
                ("dataset.image_size=-3", "must be a whole number ≥ 1, or null to keep the images' own size"),
                ("dataset.image_size=0", "must be a whole number ≥ 1, or null to keep the images' own size")]


@pytest.mark.parametrize(("override", "rule"), BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_and_exit_code_2_before_any_data_is_read(tmp_path, override, rule):
    # the folder does not exist: reading the data would fail with another message
    done = subprocess.run([sys.executable, "-m", "robustness_bias", "dataset=image_folder",
                           f"dataset.root={tmp_path / 'no_such_folder'}", override, "logger=none",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"robustness_bias: error: {override}: {rule}. Fix: pass ")
    assert not (tmp_path / "run" / "dataset.json").exists()


def test_the_rules_name_the_first_bad_key_in_process():
    with pytest.raises(ConfigError, match=r"^estimator\.cw\.initial_const=0: must be a positive number"):
        check_settings(compose_config(["estimator.cw.initial_const=0"]))
    with pytest.raises(ConfigError, match=r"^dataset\.test_fraction=1\.5: must lie in \[0, 1\)"):
        check_settings(compose_config(["dataset.test_fraction=1.5"]))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_shipped_experiment_passes_the_rules(experiment):
    check_settings(compose_config([f"+experiment={experiment}"]))
