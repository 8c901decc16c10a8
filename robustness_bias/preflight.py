"""Pre-flight: what every job of a sweep needs (a valid config, its data, its ImageNet weights), checked before
the first job trains.

A sweep runs its jobs one after another; before this, ``experiment=utk_race`` trained logistic regression and
the UTK classifier for hours and only then stopped at ResNet-50's missing weights. Each check is cheap: the
data modules check their files when they are made (nothing is decoded; CIFAR with ``dataset.download=true``
fetches its archive there, once for the sweep), weights are looked up, not loaded, and a download that is
asked for is only tried for reachability. ``robustness-bias check [overrides]`` runs it alone (the Makefile's
``sweeps`` does, for every experiment, before training any); a sweep runs it first by itself
(:class:`robustness_bias.sweep.SweepCallback`), and every job checks its weights before it reads its data.
"""

from __future__ import annotations

import itertools
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .config.checks import checked
from .config.rules import ConfigError
from .models import MissingWeights
from .models.torchvision_models import hub_file, imagenet_weights_file, weights_problem

log = logging.getLogger(__name__)

PLACEHOLDER_OUTPUT = "paths.output_dir=/pre-flight/writes/nothing"   # outside a Hydra job, ${hydra:...} is unset


def reachable(url: str, timeout: float = 10.0) -> str | None:
    """None when ``url`` answers a HEAD request; else why not (no network, a proxy, a timeout)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        return None
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"{type(error).__name__}: {getattr(error, 'reason', error)}"


def model_problem(model: DictConfig, reach: Callable[[str], str | None] = reachable) -> str | None:
    """Why this job's model cannot be built for want of its ImageNet weights, or None."""
    name = str(model.get("_target_", "")).rsplit(".", 1)[-1]
    return weights_problem(name, bool(model.get("pretrained")), model.get("weights_path"), bool(model.get("download")),
                           reach)


def job_problems(cfg: DictConfig, reach: Callable[[str], str | None] = reachable) -> list[str]:
    """Everything that would stop this job before or while it trains, each in the words the job would use."""
    from .data import DataError   # the data modules import Lightning: not before a job needs it

    try:
        cfg = checked(cfg)
    except ConfigError as error:
        return [str(error)]
    problems = []
    try:
        instantiate(cfg.dataset)   # the data module checks its folder and files; it reads no image
    except InstantiationException as error:   # Hydra wraps what the constructor raised
        problems.append(str(error.__cause__) if isinstance(error.__cause__, (DataError, ValueError, OSError))
                        else str(error))
    weights = model_problem(cfg.model, reach)
    if weights:
        problems.append(weights)
    return problems


def job_inventory(cfg: DictConfig) -> str:
    """What a job that can run will use: its data's folder and its model's ImageNet weights, for ``check``'s list."""
    root = cfg.dataset.get("root")
    data = (f"data {Path(root).expanduser().resolve()}" if root else
            f"data built in ({str(cfg.dataset._target_).rsplit('.', 1)[-1]})")
    name = str(cfg.model.get("_target_", "")).rsplit(".", 1)[-1]
    if not cfg.model.get("pretrained"):
        return f"{data}; model from scratch"
    try:
        weights = str(imagenet_weights_file(name, cfg.model.get("weights_path")))
    except MissingWeights:   # a download the job was asked to make, found reachable by job_problems
        weights = f"downloaded from {hub_file(name)[0]}"
    return f"{data}; ImageNet weights {weights}"


def sweep_jobs(overrides: Iterable[str], sweeper_params: dict | None = None) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands them: the sweeper's ``params`` (an experiment's
    grid) and the command line's, comma lists crossed, a later override of a key taking the earlier one's place.

    Built on Hydra's public override API, as its sweeper plugins are: the basic sweeper's own expansion
    (``BasicSweeper.split_arguments``) is in ``hydra._internal``. tests/test_preflight.py holds the two equal.
    """
    arguments = [f"{key}={value}" for key, value in (sweeper_params or {}).items()] + list(overrides)
    choices: dict[str, list[str]] = {}   # each key's overrides, one per job that differs in it
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:   # interval(...): no list of jobs
            raise HydraException(f"BasicSweeper does not support sweep type : {override.value_type.name}")
    return [list(job) for job in itertools.product(*choices.values())]


def sweep_problems(jobs: list[list[str]], compose: Callable[[list[str]], DictConfig],
                   reach: Callable[[str], str | None] = reachable,
                   inventory: list[str] | None = None) -> list[str]:
    """Every problem of every job, each once, naming the jobs it stops (``#2 model=resnet50``); ``inventory``
    gains a line per job that can run, saying what it found."""
    found: dict[str, list[str]] = {}
    cache: dict[str, str | None] = {}

    def reach_once(url: str) -> str | None:   # several jobs may download the same weights
        if url not in cache:
            cache[url] = reach(url)
        return cache[url]

    shared = set.intersection(*(set(overrides) for overrides in jobs)) if jobs else set()
    for number, overrides in enumerate(jobs):
        varying = " ".join(o for o in overrides if o not in shared)   # what tells this job from the others
        cfg = compose(overrides)
        problems = job_problems(cfg, reach_once)
        for problem in problems:
            found.setdefault(problem, []).append(f"#{number} {varying}".strip())
        if inventory is not None and not problems:
            inventory.append(f"#{number} {varying}".strip() + f": {job_inventory(cfg)}")
    return [f"{problem} [job(s) {'; '.join(jobs_)}]" for problem, jobs_ in found.items()]


def report(problems: list[str], jobs: int) -> None:
    """The problems on stderr, one per line, then exit with code 2 (a bad setting's code)."""
    print(f"robustness_bias: error: {len(problems)} problem(s) would stop {jobs} job(s) of this sweep; none was "
          "started:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    sys.exit(2)


USAGE = """usage: robustness-bias check [OVERRIDES...]

Checks, before anything trains, every job the overrides make (an experiment's whole grid with
experiment=NAME): that its settings are valid, its data is where dataset.root says, and its ImageNet
weights are on disk (or reachable, with imagenet.download=true). Nothing is read beyond the files' names.
Lists each job with what it found and exits 0, or prints every problem, naming the jobs it stops, and
exits 2. Example: robustness-bias check experiment=utk_race paths.data_dir=/data"""


def main(arguments: list[str]) -> None:
    """``robustness-bias check [overrides]``: compose every job the overrides (and their experiment's grid)
    make, and check what each needs; exit 0, listing what each job found, when every job can run."""
    from hydra import compose, initialize_config_dir

    from .config.messages import composition_problem, experiment_as_choice
    from .config.store import CONFIG_DIR

    if {"-h", "--help"} & set(arguments):
        print(USAGE)
        return
    arguments = [a for a in experiment_as_choice(arguments) if a not in ("-m", "--multirun")]
    hydra_overrides = [a for a in arguments if a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    task = [a for a in arguments if a not in hydra_overrides]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:   # the experiment's grid (hydra.sweeper.params), from the overrides that are not swept
            parser = OverridesParser.create()
            fixed = [a for a in task + hydra_overrides if not parser.parse_override(a).is_sweep_override()]
            base = compose(config_name="config", overrides=fixed, return_hydra_config=True)
        except Exception as error:   # a malformed override, an unknown option: in the job's words
            report([composition_problem(error)], 1)
        params = OmegaConf.to_container(base.hydra.sweeper.params) if base.hydra.sweeper.get("params") else {}
        jobs = sweep_jobs(task, params)
        found: list[str] = []
        problems = sweep_problems(jobs, lambda overrides: compose(config_name="config",
                                                                  overrides=[*overrides, PLACEHOLDER_OUTPUT]),
                                  inventory=found)
    if problems:
        report(problems, len(jobs))
    print(f"pre-flight: {len(jobs)} job(s) can run")
    for line in found:
        print(f"  {line}")
