"""``robustness-bias [overrides]`` (or ``python -m robustness_bias``): train and audit one model per Hydra job;
``robustness-bias report SWEEP... --out FOLDER``: the paper's tables and figures from finished jobs;
``robustness-bias check [overrides]``: whether every job those overrides make has its data and weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig

from .config.messages import composition_problem, experiment_as_choice  # noqa: F401 (tests import it here)
from .config.store import CONFIG_DIR


STARTED: list[bool] = []   # main's body has begun: an error before it is Hydra's, making the job's folder or log


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .console import quiet_libraries
    from .errors import UserError
    from .pipeline import run
    from .stopping import Stopped

    STARTED.append(True)
    quiet_libraries()   # after Lightning's import, which gives its loggers console handlers of their own
    try:
        result = run(cfg)
    except UserError as error:   # bad settings, data, weights or folders: the message says how to fix it
        fail(str(error))
    except Stopped as stopped:   # one line, and the status a shell gives a process the signal killed
        print(f"robustness_bias: {stopped.message}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    return result.get("test_accuracy")   # None on DDP ranks other than 0, which write nothing


def fail(problem: str) -> NoReturn:
    print(f"robustness_bias: error: {problem}", file=sys.stderr)
    sys.exit(2)


def main_with_one_line_errors() -> None:
    """:func:`main`, with an error of the config's composition (an unknown option, a value of the wrong
    type) printed in one line with exit code 2, like every other bad setting.

    Hydra prints those in several lines and exits with code 1, unless HYDRA_FULL_ERROR is set: then it
    raises them (hydra/_internal/utils.py, run_and_report). One who set it sees Hydra's full trace.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as error:
        fail(composition_problem(error))
    except (OSError, ValueError) as error:   # before the job: Hydra making its folder, or opening its log file there
        unwritable = error if isinstance(error, OSError) else error.__cause__
        if STARTED or not isinstance(unwritable, OSError) or unwritable.errno is None or not unwritable.filename:
            raise
        from .lock import cannot_write

        path = Path(unwritable.filename)
        fail(str(cannot_write(path if unwritable is error else path.parent, unwritable)))


USAGE = """usage: robustness-bias [OVERRIDES...]                 train and audit one model (a Hydra job)
       robustness-bias -m KEY=A,B ... | experiment=NAME  a sweep: one job per combination
       robustness-bias report SWEEP... --out FOLDER      the paper's tables, figures and findings from finished jobs
       robustness-bias check [OVERRIDES...]              whether every job those overrides make can run
       (python -m robustness_bias ... is the same command)

With no overrides: logistic regression on scikit-learn's bundled digits, trained and audited with the exact
distance, DeepFool, Carlini-Wagner and randomized smoothing; the answer is printed at the end.

Common overrides (KEY=VALUE; +KEY=VALUE adds a key, see the README):
  experiment=NAME          a grid of the paper, e.g. utk_race, utk_quick, cifar10, synthetic_group
  dataset=NAME             digits, synthetic, utkface, adience, cifar10, cifar100, cifar100super, image_folder
  dataset.root=PATH        where the dataset lies (image_folder: your images and labels.csv)
  paths.data_dir=PATH      the folder holding the datasets, for every dataset at once
  model=NAME               logreg, utk_classifier, resnet18, densenet121, ... or torchscript (your own model)
  model.checkpoint=FILE mode=audit    audit saved weights without training
  estimator=[exact,deepfool,cw,rs]    which distances to measure (fmn: Fast Minimum-Norm)
  partition=[race,gender]  the groups: one attribute, or several and their intersections
  audit.adjust_for=[class] σ also adjusted for these attributes
  audit.plan.cw.every_nth=N          CW on every N-th test image (likewise deepfool, rs, exact)
  trainer.max_epochs=N seed=N logger=wandb hydra.run.dir=FOLDER

Options:
  -h, --help      this text
  --version       the installed version
  --hydra-help    Hydra's own options (--cfg job prints the composed config, --info, --multirun, ...)

The README is the manual: every option, the experiments, the output files and how to read σ."""


def register_launcher() -> None:
    """Make ``hydra/launcher=slurm``'s class (hydra_plugins/robustness_bias_launcher) known to Hydra, which finds
    plugins by listing the ``hydra_plugins`` folders on sys.path: an editable install (``pip install -e``, as
    ``make install`` does) maps the package without such a folder, and Hydra's listing misses it."""
    from hydra.core.plugins import Plugins
    from hydra_plugins.robustness_bias_launcher import SlurmLauncher

    Plugins.instance().register(SlurmLauncher)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("robustness_bias")
    except PackageNotFoundError:   # run from a checkout that was never installed
        return "unknown (not installed)"


def cli() -> None:
    """The console command ``robustness-bias``: ``report`` as its first word runs the report, ``check`` the
    pre-flight of the jobs its overrides make; ``--help`` and ``--version`` answer in a few lines (Hydra's own
    help is ``--hydra-help``); anything else is a job's (or a sweep's) Hydra overrides."""
    if sys.argv[1:2] == ["report"]:
        from .report.cli import main as report

        report(sys.argv[2:], prog="robustness-bias report")
        return
    if sys.argv[1:2] == ["check"]:
        from .preflight import main as check

        check(sys.argv[2:])
        return
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(USAGE)
        return
    if "--version" in sys.argv[1:]:
        print(f"robustness-bias {version()}")
        return
    from .allocator import steady_cpu_allocator

    sys.argv[1:] = experiment_as_choice(sys.argv[1:])
    steady_cpu_allocator()
    register_launcher()
    main_with_one_line_errors()


if __name__ == "__main__":
    cli()
