"""Every config in every group composes with its schema, experiments are a choice, the module and its
optimizer come from the config, and unknown names fail with the list of options."""

import subprocess
import sys
from dataclasses import fields

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, compose_config, config_problem
from robustness_bias.config.fingerprint import job_fingerprint
from robustness_bias.config.schema import SCHEMAS
from robustness_bias.estimators.cw import PAPER_BUDGET

GROUPS = ["dataset", "model", "imagenet", "estimator", "partition", "trainer", "optim", "scheduler", "module",
          "callbacks", "logger", "regularizer", "paths"]


def _options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


CASES = [(group, name) for group in GROUPS for name in _options(group)]
UNTYPED = {"partition", "logger"}   # groups whose options have no schema: attribute names, Lightning's loggers
SET_BY_COMPOSE_CONFIG = {("paths", "output_dir")}   # conftest.compose_config overrides it


def _package(group, name):
    """Where ``<group>/<name>.yaml`` lands in the composed config: its ``# @package`` line, else the group."""
    first = (CONFIG_DIR / group / f"{name}.yaml").read_text().splitlines()[0]
    return first.removeprefix("# @package ").strip() if first.startswith("# @package ") else group


def _own_settings(group, name):
    """What the file itself sets, with interpolations left unresolved; the fields of its schema (the
    ``/schema/…`` entry of its defaults list, which every file but an empty one has); and whether it
    extends another option (as trainer=gpu extends trainer=default)."""
    own = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml"), resolve=False)
    defaults = [entry for entry in own.pop("defaults", []) if entry != "_self_"]
    schemas = [entry.removeprefix("/schema/").removesuffix("@_here_") for entry in defaults
               if entry.startswith("/schema/")]
    schema_fields = {spec.name for name in schemas for spec in fields(SCHEMAS[name])}
    return own, schema_fields, len(defaults) > len(schemas)


def test_every_group_has_options():
    assert all(_options(group) for group in [*GROUPS, "experiment"])


@pytest.mark.parametrize(("group", "name"), CASES, ids=[f"{g}={n}" for g, n in CASES])
def test_every_config_composes(group, name):
    override = f"{group}=[{name}]" if group == "estimator" else f"{group}={name}"
    cfg = compose_config([override])
    if group == "estimator":   # under its name, or a preset's under the estimator it configures (cw_paper: cw)
        assert list(cfg.estimator) == [_package(group, name).removeprefix("estimator.")]
    # the chosen file, not the default one, is what ended up at its package: every value it sets is there,
    # beside its schema's fields
    own, schema_fields, extends_another = _own_settings(group, name)
    composed = OmegaConf.select(cfg, _package(group, name))
    assert composed is not None
    composed = OmegaConf.to_container(composed, resolve=False)
    assert schema_fields or extends_another or not own or group in UNTYPED, "no /schema/… in its defaults list"
    expected = own.keys() | schema_fields
    assert expected <= composed.keys() if extends_another else expected == composed.keys()
    assert {key: composed[key] for key in own if (group, key) not in SET_BY_COMPOSE_CONFIG} == \
        {key: value for key, value in own.items() if (group, key) not in SET_BY_COMPOSE_CONFIG}
    OmegaConf.to_container(cfg[group], resolve=True)


@pytest.mark.parametrize("name", _options("experiment"))
def test_every_experiment_composes(name):
    cfg = compose_config([f"experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.estimator and cfg.trainer.max_epochs >= 1


def test_an_experiment_is_chosen_with_or_without_plus():
    plain, plus = (compose_config([f"{prefix}experiment=synthetic_group"]) for prefix in ("", "+"))
    assert plain == plus and list(plain.estimator) == ["exact"] and plain.dataset.n_samples == 2000
    assert list(compose_config([]).estimator) == ["exact", "deepfool", "cw", "rs"]   # experiment: null
    assert "experiment" not in compose_config([])


def test_the_command_line_takes_an_experiment_with_or_without_plus(tmp_path):
    printed = [subprocess.run([sys.executable, "-m", "robustness_bias", f"{prefix}experiment=synthetic_group",
                               "--cfg", "job"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
               for prefix in ("", "+")]
    assert [done.returncode for done in printed] == [0, 0], printed[1].stderr[-2000:]
    assert printed[0].stdout == printed[1].stdout and "robustness_bias.data.SyntheticDataModule" in printed[0].stdout


def test_estimators_form_a_list():
    cfg = compose_config(["estimator=[exact]"])
    assert list(cfg.estimator) == ["exact"]


@pytest.mark.parametrize("override", ["model=resnet_typo", "dataset=nope", "partition=nope", "logger=wandbb"])
def test_unknown_names_list_the_options(override):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as error:
        compose_config([override])
    assert "Available options" in str(error.value)


def test_unknown_estimator_lists_the_options():
    """Hydra names a missing option of a list-valued group without listing the options; we do."""
    assert config_problem(["model=logreg", "estimator=[exact,deepfol]"]) == \
        "'deepfol' is not an option of estimator. Available options in 'estimator': cw, cw_paper, deepfool, exact, fmn, rs"
    assert config_problem(["model=resnet_typo"]).startswith("'resnet_typo' is not an option of model. Available "
                                                           "options in 'model': adience_classifier, alexnet, ")


def test_the_command_line_lists_the_estimators_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "robustness_bias", "estimator=[exact,deepfol]"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("robustness_bias: error: 'deepfol' is not an option of estimator. "
                                   "Available options in 'estimator': cw, cw_paper, deepfool, exact, fmn, rs")


def test_the_module_optimizer_and_schedule_are_built_from_the_config():
    from robustness_bias.models import logreg
    from robustness_bias.assembly import build_module

    network = logreg((1, 8, 8), 10, {"mean": [0.5], "std": [0.5]})
    module = build_module(compose_config(["optim.lr=0.01", "trainer.max_epochs=4"]), network, None)
    chosen = module.configure_optimizers()
    optimizer, scheduler = chosen["optimizer"], chosen["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.01
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.param_groups[0]["params"] == list(network.parameters())
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max == 4
    constant = build_module(compose_config(["scheduler=none"]), network, None).configure_optimizers()
    assert isinstance(constant, torch.optim.SGD)


def test_speed_settings_leave_the_fingerprint_and_science_settings_change_it():
    """A job reruns or resumes under another batch size, gradient mode or with CUDA graphs (same results up
    to rounding), but not under another budget."""

    base = ["estimator=[deepfool,cw,rs]"]
    fingerprint = job_fingerprint(compose_config(base))
    for speed in ("audit.plan.deepfool.batch_size=32", "estimator.cw.cuda_graphs=true",
                  "estimator.deepfool.cuda_graphs=true", "estimator.deepfool.gradients=replicated",
                  "audit.plan.rs.chunk_size=7", "estimator.rs.forward_batch=100",
                  "audit.plan.exact.every_nth=3",   # exact is not selected: its plan is not used
                  "callbacks.epoch_checkpoint.path=/elsewhere/last.ckpt",   # where, as paths.output_dir
                  "trainer.enable_progress_bar=false", "audit.progress=false", "dataset.num_workers=2"):
        assert job_fingerprint(compose_config([*base, speed])) == fingerprint, speed
    for science in ("estimator.deepfool.steps=7", "estimator.cw.learning_rate=0.01", "estimator.rs.n=10",
                    "audit.plan.rs.every_nth=2", "audit.plan.cw.precision=bf16",
                    "+trainer.accumulate_grad_batches=2", "trainer.gradient_clip_val=5"):   # a key the schema does not know counts too
        assert job_fingerprint(compose_config([*base, science])) != fingerprint, science


def test_cw_budgets_are_named_presets_and_fingerprinted_apart():
    """The default CW budget and the paper's (estimator=[...,cw_paper,...]) both record as cw; their jobs'
    fingerprints differ, so records of one are never reused as the other's."""
    default, paper = compose_config([]), compose_config(["estimator=[exact,deepfool,cw_paper,rs]"])
    assert list(paper.estimator) == ["exact", "deepfool", "cw", "rs"]
    assert {key: paper.estimator.cw[key] for key in ("binary_search_steps", "steps", "initial_const", "learning_rate",
                                                     "per_dimension")} == {**PAPER_BUDGET}
    assert instantiate(paper.estimator.cw).query_budget == 2 * 5 * 100 + 10
    assert job_fingerprint(default) != job_fingerprint(paper)
    # the paper's grids keep its budget; the quick tier and the default run converge
    for experiment, budget in (("utk_race", 5), ("cifar10", 5), ("utk_race_reg", 5), ("utk_quick", 10),
                               ("utk_quick_tight", 10)):
        assert compose_config([f"experiment={experiment}"]).estimator.cw.binary_search_steps == budget, experiment
