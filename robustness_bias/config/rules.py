"""What a setting must be: the rules each field of the schema carries, and checking values against them.

A rule is a test, the words for it ("must be …") and a value that passes, so that a broken one reads as one
line naming the key, the value, the rule and a fix. The schema's fields carry them (:func:`setting`); the
command line checks a composed config by them (checks.py), the estimators and the Python API check their
arguments by the same rules (:func:`check_values`). Plain Python: no Hydra here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING

from ..errors import UserError


class ConfigError(UserError, ValueError):
    """A setting is impossible; the message names it and says how to fix it."""


# ---------------------------------------------------------------- rules


def shown(value) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))   # as typed: a float setting holds 0 as 0.0
    return str(value)


@dataclass(frozen=True)
class Rule:
    """What a setting must be: a test, the words for it ("must be …") and a value that passes, for the fix."""

    holds: Callable[[Any], bool]
    text: str
    example: str

    def check(self, key: str, value) -> None:
        if not self.holds(value):
            raise ConfigError(self.broken_by(key, value))

    def broken_by(self, key: str, value) -> str:
        return f"{key}={shown(value)}: {self.text}. Fix: pass {key}={self.example}"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(minimum: int, example: int) -> Rule:
    return Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                f"must be a whole number ≥ {minimum}", str(example))


def positive(example: float) -> Rule:
    return Rule(lambda v: _number(v) and v > 0, "must be a positive number", str(example))


def at_least_zero(example: float) -> Rule:
    return Rule(lambda v: _number(v) and v >= 0, "must be a number ≥ 0", str(example))


def fraction(example: float) -> Rule:
    return Rule(lambda v: _number(v) and 0 <= v < 1, "must lie in [0, 1)", str(example))


def probability(example: float) -> Rule:
    return Rule(lambda v: _number(v) and 0 < v < 1, "must lie strictly between 0 and 1", str(example))


def optional(rule: Rule, meaning: str, example: str | None = None) -> Rule:
    """``rule``, or null with the given meaning."""
    return Rule(lambda v: v is None or rule.holds(v), f"{rule.text}, or null {meaning}", example or rule.example)


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"must be one of {', '.join(choices)}", choices[0])


FLAG = Rule(lambda v: isinstance(v, bool), "must be true or false", "true")
QUANTILES = Rule(lambda v: isinstance(v, list) and all(_number(q) and 0 < q < 1 for q in v),
                 "each must lie strictly between 0 and 1", "[0.25,0.5,0.75]")
ATTRIBUTES = Rule(lambda v: isinstance(v, list) and all(isinstance(a, str) and a for a in v),
                  "must be a list of attribute names", "[class]")
POSITIVES = Rule(lambda v: isinstance(v, list) and all(_number(m) and m > 0 for m in v),
                 "each must be a positive number", "[1.0,0.4]")
PROBABILITIES = Rule(lambda v: isinstance(v, list) and all(_number(q) and 0 < q < 1 for q in v),
                     "each must lie strictly between 0 and 1", "[0.2,0.8]")
TAU_MAX = Rule(lambda v: v == "pooled_max" or (_number(v) and v > 0), "must be pooled_max or a positive number",
               "pooled_max")


def setting(rule: Rule | None, default=MISSING, *, shapes_results: bool = True, hashed_at_default: bool = True):
    """A dataclass field checked against ``rule``; MISSING (the default): every YAML file of the group sets it.

    ``shapes_results=False`` marks what changes only how fast a job runs, where it writes or which shard
    it takes: left out of the job's fingerprint (:func:`results_settings`), so that e.g. a smaller batch
    chosen after running out of memory still resumes, and the shards of one audit share a fingerprint.
    ``hashed_at_default=False`` (a setting added after jobs were run, whose default reproduces what they did):
    the fingerprint leaves it out while it holds its default and hashes it otherwise, so those jobs keep
    their fingerprints (they resume and are skipped as before) and a job that sets it is another job.
    """
    metadata = {"rule": rule, "shapes_results": shapes_results, "hashed_at_default": hashed_at_default}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def elsewhere(default=MISSING):
    """A field that shapes no result and has no rule: where a job writes or logs."""
    return setting(None, default, shapes_results=False)



def rule_of(schema, name) -> Rule | None:
    """The rule of field ``name`` of ``schema`` (a dataclass), if it has one."""
    if not (isinstance(schema, type) and is_dataclass(schema)):
        return None
    return next((spec.metadata.get("rule") for spec in fields(schema) if spec.name == name), None)


def check_rules(node, key: str) -> None:
    """Depth first: each field against its rule, then the dataclass's own ``check`` of how fields relate."""
    if is_dataclass(node):
        for spec in fields(node):
            value, path = getattr(node, spec.name), f"{key}.{spec.name}" if key else spec.name
            if spec.metadata.get("rule") is not None:
                spec.metadata["rule"].check(path, value)
            check_rules(value, path)
        if hasattr(node, "check"):
            node.check(key)
    elif isinstance(node, dict):
        for name, value in node.items():
            check_rules(value, f"{key}.{name}" if key else str(name))


def check_values(schema, key: str, **values) -> None:
    """Keyword arguments (say an estimator's, ``key`` its name) by the rules of ``schema``, the others at the
    schema's defaults: the command line's rules and words for a class or a function called from Python."""
    check_rules(schema(**values), key)
