"""Settings that are wrong whatever the data, checked before anything is read or trained.

Each impossible value gives one line naming the key, the value and the rule (the command line
prints it without a traceback and exits with code 2), instead of a ValueError from deep inside a
model, an optimizer or an estimator that names no key, or — for ``dataset.image_size=0`` — a
silently different run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from .analysis.metrics import FAILURE_POLICIES


class ConfigError(ValueError):
    """A setting is impossible; the message names it and says how to fix it."""


class Rule(NamedTuple):
    holds: Callable[[object], bool]
    text: str       # "must be …"
    example: str    # a value that holds, for the fix


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(minimum: int, example: int) -> Rule:
    return Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                f"must be a whole number ≥ {minimum}", str(example))


def positive(example: float) -> Rule:
    return Rule(lambda v: _number(v) and v > 0, "must be a positive number", str(example))


def optional(rule: Rule, meaning: str) -> Rule:
    return Rule(lambda v: v is None or rule.holds(v), f"{rule.text}, or null {meaning}", rule.example)


NON_NEGATIVE = Rule(lambda v: _number(v) and v >= 0, "must be a number ≥ 0", "0")
FRACTION = Rule(lambda v: _number(v) and 0 <= v < 1, "must lie in [0, 1)", "0.1")
PROBABILITY = Rule(lambda v: _number(v) and 0 < v < 1, "must lie strictly between 0 and 1", "0.001")
FORWARD_BATCH = optional(whole(1, 1000), "to measure the fastest")._replace(example="null")   # rs.forward_batch

# key → rule, checked where the key is set (a dataset without image_size has nothing to check)
RULES = {
    "trainer.max_epochs": whole(1, 5),
    "optim.lr": positive(0.05),
    "optim.momentum": FRACTION._replace(example="0.9"),
    "optim.weight_decay": NON_NEGATIVE,
    "dataset.image_size": optional(whole(1, 64), "to keep the images' own size"),
    "dataset.batch_size": whole(1, 64),
    "dataset.eval_batch_size": whole(1, 256),
    "dataset.val_fraction": FRACTION,
    "dataset.test_fraction": FRACTION._replace(example="0.2"),
    "audit.num_shards": whole(1, 1),
    "audit.min_group_size": whole(1, 5),
    "regularizer.alpha": NON_NEGATIVE._replace(example="1.0"),
    "regularizer.tau": NON_NEGATIVE._replace(example="2.0"),
    "regularizer.temperature": positive(0.1),
}

# estimator class → its keys' rules, checked as estimator.<name>.<key>
ESTIMATOR_RULES = {
    "RandomizedSmoothing": {"sigma": positive(0.125), "n0": whole(1, 100), "n": whole(1, 100000),
                            "alpha": PROBABILITY, "forward_batch": FORWARD_BATCH, "noise_chunk": whole(1, 500)},
    "DeepFool": {"steps": whole(1, 100), "candidates": whole(2, 10),
                 "overshoot": NON_NEGATIVE._replace(example="0.02")},
    "CarliniWagner": {"binary_search_steps": whole(1, 5), "steps": whole(1, 100), "initial_const": positive(0.01),
                      "learning_rate": positive(0.005), "confidence": NON_NEGATIVE},
    "ExactLinear": {"rtol": positive(0.0001)},
}
PLAN = {"batch_size": whole(1, 256), "every_nth": whole(1, 1), "chunk_size": whole(1, 256),
        "precision": Rule(lambda v: v in ("fp32", "bf16"), "must be fp32 or bf16", "fp32")}

_UNSET = object()


def check_rule(key: str, value, rule: Rule) -> None:
    if not rule.holds(value):
        shown = "null" if value is None else value
        raise ConfigError(f"{key}={shown}: {rule.text}. Fix: pass {key}={rule.example}")


def estimator_rules(cfg: DictConfig) -> dict[str, Rule]:
    """``estimator.<name>.<key>`` and ``audit.plan.<name>.<key>`` → rule, for the estimators this job runs."""
    rules = {}
    for name, spec in cfg.estimator.items():
        kind = str(spec.get("_target_", "")).rsplit(".", 1)[-1]
        rules.update({f"estimator.{name}.{key}": rule for key, rule in ESTIMATOR_RULES.get(kind, {}).items()})
        rules.update({f"audit.plan.{name}.{key}": rule for key, rule in PLAN.items()})
    return rules


def check_settings(cfg: DictConfig) -> None:
    """Fail on the first impossible setting, before any data is loaded or model trained."""
    if cfg.get("mode", "train") not in ("train", "audit"):
        raise ConfigError(f"mode={cfg.mode}: use mode=train (train, then audit) or mode=audit (audit a saved model)")
    if not cfg.get("estimator"):
        raise ConfigError("no estimator is configured. Fix: pass estimator=[exact] (or another list of estimators)")
    if cfg.get("mode") == "audit" and not cfg.model.get("checkpoint"):
        raise ConfigError("mode=audit needs a trained model. Fix: pass model.checkpoint=/path/to/checkpoint")
    for key, rule in {**RULES, **estimator_rules(cfg)}.items():
        value = OmegaConf.select(cfg, key, default=_UNSET)
        if value is not _UNSET:
            check_rule(key, value, rule)
    check_audit(cfg.audit)


def check_audit(audit: DictConfig) -> None:
    """The audit's settings that no single rule of the table expresses."""
    if not isinstance(audit.shard, int) or not 0 <= audit.shard < audit.num_shards:
        raise ConfigError(f"audit.shard={audit.shard} audit.num_shards={audit.num_shards}: the shard must be a whole "
                          f"number from 0 to num_shards − 1. Fix: pass audit.shard=0 … {audit.num_shards - 1}")
    if audit.failures not in FAILURE_POLICIES:
        raise ConfigError(f"audit.failures={audit.failures}: unknown failure policy. Fix: use one of {FAILURE_POLICIES}")
    if audit.tau_max != "pooled_max" and not (_number(audit.tau_max) and audit.tau_max > 0):
        raise ConfigError(f"audit.tau_max={audit.tau_max}: use pooled_max or a positive number")
    if not all(_number(q) and 0 < q < 1 for q in audit.rb_quantiles):
        raise ConfigError(f"audit.rb_quantiles={list(audit.rb_quantiles)}: each must lie strictly between 0 and 1")
