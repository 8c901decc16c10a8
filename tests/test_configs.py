"""Every config in every group composes, and unknown names fail with Hydra's list of options."""

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, compose_config

GROUPS = ["dataset", "model", "estimator", "partition", "trainer", "logger", "paths"]


def _options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


CASES = [(group, name) for group in GROUPS for name in _options(group)]
SET_BY_COMPOSE_CONFIG = {("paths", "output_dir")}   # conftest.compose_config overrides it


def _package(group, name):
    """Where ``<group>/<name>.yaml`` lands in the composed config: its ``# @package`` line, else the group."""
    first = (CONFIG_DIR / group / f"{name}.yaml").read_text().splitlines()[0]
    return first.removeprefix("# @package ").strip() if first.startswith("# @package ") else group


def _own_settings(group, name):
    """What the file itself sets, with interpolations left unresolved, and whether it extends another
    option (a defaults list, as trainer=gpu extends trainer=default)."""
    own = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml"), resolve=False)
    return own, own.pop("defaults", None) is not None


def test_every_group_has_options():
    assert all(_options(group) for group in [*GROUPS, "experiment"])


@pytest.mark.parametrize(("group", "name"), CASES, ids=[f"{g}={n}" for g, n in CASES])
def test_every_config_composes(group, name):
    override = f"{group}=[{name}]" if group == "estimator" else f"{group}={name}"
    cfg = compose_config([override])
    if group == "estimator":
        assert list(cfg.estimator) == [name]
    # the chosen file, not the default one, is what ended up at its package: every value it sets is there
    own, extends_another = _own_settings(group, name)
    composed = OmegaConf.select(cfg, _package(group, name))
    assert composed is not None
    composed = OmegaConf.to_container(composed, resolve=False)
    assert own.keys() <= composed.keys() if extends_another else own.keys() == composed.keys()
    assert {key: composed[key] for key in own if (group, key) not in SET_BY_COMPOSE_CONFIG} == \
        {key: value for key, value in own.items() if (group, key) not in SET_BY_COMPOSE_CONFIG}
    OmegaConf.to_container(cfg[group], resolve=True)


@pytest.mark.parametrize("name", _options("experiment"))
def test_every_experiment_composes(name):
    cfg = compose_config([f"+experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.estimator and cfg.trainer.max_epochs >= 1


def test_experiment_is_not_in_the_defaults():
    assert "experiment" not in compose_config([])


def test_estimators_form_a_list():
    cfg = compose_config(["estimator=[exact]"])
    assert list(cfg.estimator) == ["exact"]


@pytest.mark.parametrize("override", ["model=resnet_typo", "dataset=nope", "partition=nope", "logger=wandbb"])
def test_unknown_names_list_the_options(override):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as error:
        compose_config([override])
    assert "Available options" in str(error.value)


def test_unknown_estimator_lists_the_options():
    from robustness_bias.__main__ import unknown_estimators

    message = unknown_estimators(["model=logreg", "estimator=[exact,deepfol]"])
    assert "deepfol" in message and "Available options in 'estimator': cw, deepfool, exact, rs" in message
    assert unknown_estimators(["estimator=[exact]", "+experiment=synthetic_group"]) is None


def test_speed_settings_leave_the_fingerprint_and_science_settings_change_it():
    """A job reruns or resumes under another batch size, gradient mode or with CUDA graphs (same results up
    to rounding), but not under another budget."""
    from robustness_bias.pipeline import job_fingerprint

    base = ["estimator=[deepfool,cw,rs]"]
    fingerprint = job_fingerprint(compose_config(base))
    for speed in ("audit.plan.deepfool.batch_size=32", "estimator.cw.cuda_graphs=true",
                  "estimator.deepfool.cuda_graphs=true", "estimator.deepfool.gradients=replicated",
                  "audit.plan.rs.chunk_size=7", "estimator.rs.forward_batch=100",
                  "audit.plan.exact.every_nth=3"):   # exact is not selected: its plan is not used
        assert job_fingerprint(compose_config([*base, speed])) == fingerprint, speed
    for science in ("estimator.deepfool.steps=7", "estimator.cw.learning_rate=0.01", "estimator.rs.n=10",
                    "audit.plan.rs.every_nth=2", "audit.plan.cw.precision=bf16"):
        assert job_fingerprint(compose_config([*base, science])) != fingerprint, science
