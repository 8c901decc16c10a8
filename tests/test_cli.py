"""The command line explains itself: a usage text of its three forms instead of Hydra's config dump, its
version, and help for ``check`` and ``report``."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def command(*arguments):
    return subprocess.run([sys.executable, "-m", "robustness_bias", *arguments], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_a_usage_text_naming_report_and_check(flag):
    done = command(flag)
    assert done.returncode == 0 and not done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("usage: robustness-bias [OVERRIDES...]") and len(lines) <= 80
    assert any(line.lstrip().startswith("robustness-bias report SWEEP") for line in lines)
    assert any(line.lstrip().startswith("robustness-bias check") for line in lines)
    assert "--hydra-help" in done.stdout   # Hydra's own help, one flag away


def test_version_is_the_projects():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    done = command("--version")
    assert (done.returncode, done.stdout) == (0, f"robustness-bias {version}\n")


@pytest.mark.parametrize(("words", "usage"), [(["check", "--help"], "usage: robustness-bias check"),
                                              (["report", "--help"], "usage: robustness-bias report")])
def test_check_and_report_have_their_own_help(words, usage):
    done = command(*words)
    assert done.returncode == 0 and done.stdout.startswith(usage), done.stderr[-1000:]


def test_the_same_command_twice_makes_one_folder_and_the_second_skips(tmp_path):
    arguments = ["trainer.max_epochs=1", "estimator=[exact]", "audit.progress=false"]
    runs = [subprocess.run([sys.executable, "-m", "robustness_bias", *arguments], capture_output=True, text=True,
                           timeout=600, cwd=tmp_path) for _ in range(2)]
    assert [done.returncode for done in runs] == [0, 0], runs[-1].stderr[-2000:]
    [folder] = (tmp_path / "outputs" / "default").iterdir()   # named by the job, not by the clock
    assert folder.name.startswith("digits-logreg-s0-")
    log = (folder / "robustness_bias.log").read_text()
    assert log.count("already finished with the same settings") == 1
    [wandb_run] = (folder / "wandb").glob("offline-run-*")   # the skipped rerun opened no second W&B run
    assert wandb_run.name.endswith((folder / "wandb-run-id").read_text())


def test_a_planted_wandb_run_id_is_replaced_not_used(tmp_path):
    from robustness_bias.assembly import wandb_run_id

    (tmp_path / "wandb-run-id").write_text("../../elsewhere; rm -rf /\n")
    made = wandb_run_id(tmp_path)
    assert len(made) == 8 and set(made) <= set("0123456789abcdef")
    assert wandb_run_id(tmp_path) == made == (tmp_path / "wandb-run-id").read_text()   # kept for the rerun
