"""Every impossible setting is one line on the command line, exit code 2, before any data is read: a value
of the wrong type while Hydra composes the config, a value out of range when the job starts."""

import subprocess
import sys
from dataclasses import fields

import pytest
import yaml
from conftest import CONFIG_DIR, compose_config, config_problem
from hydra.errors import ConfigCompositionException

from robustness_bias.config.checks import checked
from robustness_bias.config.job import EstimatorPlan
from robustness_bias.config.rules import ConfigError
from robustness_bias.config.schema import SCHEMAS

BAD_SETTINGS = [("estimator.rs.n=-5", "must be a whole number ≥ 1"),
                ("estimator.rs.alpha=2", "must lie strictly between 0 and 1"),
                ("estimator.rs.sigma=0", "must be a positive number"),
                ("estimator.rs.forward_batch=0", "must be a whole number ≥ 1, or null to measure the fastest"),
                ("estimator.deepfool.steps=0", "must be a whole number ≥ 1"),
                ("optim.lr=-1", "must be a positive number"),
                ("dataset.image_size=-3", "must be a whole number ≥ 1, or null to keep the images' own size"),
                ("dataset.image_size=0", "must be a whole number ≥ 1, or null to keep the images' own size"),
                ("trainer.max_epochs=abc", "must be a whole number ≥ 1"),          # a type: refused by Hydra
                ("module.channels_last=maybe", "must be true or false")]


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


def test_a_wrong_type_is_refused_while_composing_with_its_rule():
    with pytest.raises(ConfigCompositionException):
        compose_config(["trainer.max_epochs=abc"])
    assert config_problem(["trainer.max_epochs=abc"]) == \
        "trainer.max_epochs=abc: must be a whole number ≥ 1. Fix: pass trainer.max_epochs=5"
    assert config_problem(["estimator.rs.n=2.5"]) == "estimator.rs.n=2.5: must be a whole number ≥ 1. Fix: pass " \
                                                     "estimator.rs.n=100000"


TRAINER_KEYS = "max_epochs, accelerator, devices, precision, deterministic, log_every_n_steps, enable_model_summary, " \
               "default_root_dir, enable_progress_bar, gradient_clip_val, strategy"
AUDIT_KEYS = "plan, shard, num_shards, conditional, failures, tau_max, rb_quantiles, progress, min_group_size, " \
             "significance, adjust_for, skip_unfit_estimators, best"
DIGITS_KEYS = "normalization, batch_size, eval_batch_size, num_workers, val_fraction, split_seed, balance_by, test_fraction"
# With or without +: Hydra refuses the key without it, and with it OmegaConf used to take it silently (a typo
# ignored, or a TypeError traceback from the data module's constructor); either way now the same line.
UNKNOWN_KEYS = [
    ("trainer.max_epoch=3", "trainer.max_epoch=3: trainer has no setting max_epoch (TrainerConfig's: "
     f"{TRAINER_KEYS}; nor does lightning.pytorch.Trainer take it). Fix: pass trainer.max_epochs=3"),
    ("audit.plann.x=1", f"audit.plann.x=1: audit has no setting plann (AuditConfig's: {AUDIT_KEYS}). Fix: spell it "
     "audit.plan, or leave audit.plann out"),
    ("dataset.image_size=-3", f"dataset.image_size=-3: dataset has no setting image_size (DigitsData's: {DIGITS_KEYS}; "
     "nor does robustness_bias.data.DigitsDataModule take it). Fix: leave dataset.image_size out"),
    ("estimator.deepfool.stepz=3", "estimator.deepfool.stepz=3: estimator.deepfool has no setting stepz "
     "(DeepFoolConfig's: steps, candidates, overshoot, gradients, cuda_graphs; nor does "
     "robustness_bias.estimators.DeepFool take it). Fix: pass estimator.deepfool.steps=3"),
    ("sed=1", "sed=1: the config has no setting sed (JobConfig's: learning_rates, seed, mode, name, dataset, imagenet, "
     "model, estimator, partition, trainer, logger, regularizer, paths, optim, scheduler, module, callbacks, audit). "
     "Fix: pass seed=1")]


@pytest.mark.parametrize("plus", ["", "+", "++"], ids=["plain", "added", "forced"])
@pytest.mark.parametrize(("override", "line"), UNKNOWN_KEYS, ids=[o for o, _ in UNKNOWN_KEYS])
def test_an_unknown_key_is_one_line_naming_the_known_ones_with_or_without_plus(override, line, plus):
    assert config_problem([plus + override]) == line


def test_the_fix_an_unknown_key_suggests_works():
    for override, line in UNKNOWN_KEYS:
        fix = line.split(". Fix: ")[1]
        if fix.startswith("pass "):
            assert config_problem([fix.removeprefix("pass ")]) is None, fix


def test_plus_adds_what_the_nodes_target_takes_and_is_suggested_for_it():
    assert config_problem(["+trainer.accumulate_grad_batches=2"]) is None   # an argument of Lightning's Trainer
    assert config_problem(["trainer.accumulate_grad_batches=2"]).endswith(
        "but lightning.pytorch.Trainer takes it. Fix: pass +trainer.accumulate_grad_batches=2")
    assert config_problem(["+partition.by=[class]"]) is None   # partition has no schema: its keys are free
    assert config_problem(["dataset=image_folder", "+dataset.image_size=-3"]) == \
        "dataset.image_size=-3: must be a whole number ≥ 1, or null to keep the images' own size. Fix: pass " \
        "dataset.image_size=64"   # image_folder has the key: its rule


def test_an_added_unknown_key_stops_the_command_line_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "robustness_bias", "+audit.plann.x=1", "logger=none",
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.splitlines() == [f"robustness_bias: error: {UNKNOWN_KEYS[1][1]}"]
    assert not (tmp_path / "run" / "dataset.json").exists()


def test_the_rules_name_the_first_bad_key_in_process():
    with pytest.raises(ConfigError, match=r"^estimator\.cw\.initial_const=0: must be a positive number"):
        checked(compose_config(["estimator.cw.initial_const=0"]))
    with pytest.raises(ConfigError, match=r"^dataset\.test_fraction=1\.5: must lie in \[0, 1\)"):
        checked(compose_config(["dataset.test_fraction=1.5"]))
    with pytest.raises(ConfigError, match=r"^mode=tune: must be one of train, audit\. Fix: pass mode=train$"):
        checked(compose_config(["mode=tune"]))


def test_a_value_that_models_take_by_interpolation_is_named_where_it_is_set():
    assert config_problem(["model=resnet18", "imagenet.input_size=0"]) == "imagenet.input_size=0: must be a whole " \
        "number ≥ 1, or null to keep the dataset's size. Fix: pass imagenet.input_size=224"


RULED = [(name, spec.name, spec.metadata["rule"]) for name, schema in {**SCHEMAS, "plan": EstimatorPlan}.items()
         for spec in fields(schema) if spec.metadata.get("rule") is not None]


@pytest.mark.parametrize(("schema", "key", "rule"), RULED, ids=[f"{s}.{k}" for s, k, _ in RULED])
def test_the_fix_each_rule_suggests_passes_it(schema, key, rule):
    assert rule.holds(yaml.safe_load(rule.example))


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_every_shipped_experiment_passes_the_rules(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    if cfg.mode == "audit":   # an audit-mode experiment is given its trained model on the command line
        cfg = compose_config([f"experiment={experiment}", "model.checkpoint=multirun/job/checkpoints/last.ckpt"])
    checked(cfg)


def test_the_audit_layout_with_a_plan_per_estimator_checks_each_plan():
    """The layout the audit moves to (``audit.plan.<estimator>``), not yet what conf/config.yaml holds."""
    from omegaconf import OmegaConf

    from robustness_bias.config.job import AuditConfig
    from robustness_bias.config.rules import check_rules

    today = OmegaConf.to_container(compose_config([]).audit)
    shared = {key: value for key, value in today.items() if key not in ("every_nth", "batch_size", "chunk_size")}

    def audit_with(plan):
        schema = OmegaConf.structured(AuditConfig)
        check_rules(OmegaConf.to_object(OmegaConf.merge(schema, {**shared, "plan": plan})), "audit")

    audit_with({"rs": {"every_nth": 5, "chunk_size": 32, "batch_size": 16, "precision": "bf16"}, "deepfool": {}})
    with pytest.raises(ConfigError, match=r"^audit\.plan\.rs\.every_nth=0: must be a whole number ≥ 1\. "
                                          r"Fix: pass audit\.plan\.rs\.every_nth=1$"):
        audit_with({"rs": {"every_nth": 0}})
    with pytest.raises(ConfigError, match=r"^audit\.plan\.cw\.precision=fp16: must be one of fp32, bf16"):
        audit_with({"cw": {"precision": "fp16"}})
