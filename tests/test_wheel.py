"""The wheel, as a user installs it: built from this checkout, installed into a fresh environment, its console
command audits a tiny model from a folder outside the repository, with the configs the wheel carries.

The fresh environment reuses the installed dependencies (torch is large): a ``.pth`` file puts this
environment's site-packages after its own, as a plain path, so its ``.pth`` files (among them the
editable install of this checkout) are not run, and ``robustness_bias`` can only come from the wheel.
"""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def without_checkout(env: dict) -> dict:
    """The environment less anything that would import this checkout instead of the installed wheel."""
    return {key: value for key, value in env.items() if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    env = without_checkout(os.environ)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(work / "dist"), str(ROOT)], check=True, env=env, cwd=work, timeout=300)
    [wheel] = (work / "dist").glob("robustness_bias-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_dependencies.pth").write_text("\n".join(outer) + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--quiet",
                    str(wheel)], check=True, env=env, cwd=work, timeout=300)
    return {"venv": venv, "python": python, "command": venv / "bin" / "robustness-bias", "work": work, "env": env,
            "wheel": wheel}


def test_the_wheel_carries_every_config(fresh):
    import zipfile

    names = set(zipfile.ZipFile(fresh["wheel"]).namelist())
    configs = {f"robustness_bias/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert configs and configs <= names, sorted(configs - names)[:5]


def test_the_installed_package_is_the_wheels_with_its_own_configs(fresh):
    done = subprocess.run([fresh["python"], "-c", "import robustness_bias.config.store as c; print(c.__file__); "
                           "print(c.CONFIG_DIR)"], capture_output=True, text=True, env=fresh["env"], cwd=fresh["work"])
    module, config_dir = done.stdout.split()
    assert Path(module).is_relative_to(fresh["venv"]) and Path(config_dir).is_relative_to(fresh["venv"]), done.stdout


def test_the_console_command_audits_outside_the_repository(fresh):
    elsewhere = fresh["work"] / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([fresh["command"], "estimator=[exact]", "trainer.max_epochs=1", "logger=none",
                           "audit.significance.resamples=20", "audit.significance.permutations=20",
                           "hydra.run.dir=job"], capture_output=True, text=True, env=fresh["env"], cwd=elsewhere,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    job = elsewhere / "job"
    summary = pd.read_parquet(job / "audits" / "final" / "summary.parquet")
    assert set(summary["estimator"]) == {"exact"} and (job / "robustness_bias.log").is_file()
    assert "exact · class\n" in done.stdout and "◀ least robust" in done.stdout and f"files in {job}" in done.stdout

    report = subprocess.run([fresh["command"], "report", "job", "--out", "report", "--only", "table2"],
                            capture_output=True, text=True, env=fresh["env"], cwd=elsewhere, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert pd.read_csv(elsewhere / "report" / "table2.csv")["model"].tolist() == ["logreg"]

    check = subprocess.run([fresh["command"], "check", "model=logreg,small_cnn"], capture_output=True, text=True,
                           env=fresh["env"], cwd=elsewhere, timeout=300)
    assert check.returncode == 0 and "pre-flight: 2 job(s) can run" in check.stdout, check.stderr[-3000:]
