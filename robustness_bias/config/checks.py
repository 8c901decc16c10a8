"""Checking a composed config before a job reads any data: every rule of the schema, and keys no schema declares.

Either way a bad setting is one line naming the key, the value, the rule and a fix (messages.py), instead of
a ValueError from deep inside a model, an optimizer or an estimator that names no key.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import fields, is_dataclass

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .job import selected_estimators
from .messages import setting_problem, takes_keyword, unknown_setting
from .rules import ConfigError, check_rules, shown

log = logging.getLogger(__name__)


def checked(cfg: DictConfig) -> DictConfig:
    """The job's config with every rule checked (:class:`ConfigError` names the first broken one), less the
    settings of estimators it does not run.

    An experiment may set parameters of estimators that a command line then deselects
    (``estimator=[deepfool] experiment=utk_quick``): those come without a ``_target_`` and are dropped.
    """
    cfg = without_unselected_estimators(cfg)
    for node, key in added_keys(cfg):
        if not takes_keyword(node.get("_target_"), key.rpartition(".")[2]):
            raise ConfigError(unknown_setting(node, key, added_override(node, key)))
    try:
        job = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(setting_problem(error)) from None
    check_rules(job, "")
    return cfg


def without_unselected_estimators(cfg: DictConfig) -> DictConfig:
    """``cfg`` less the settings of estimators it does not run (:func:`selected_estimators`)."""
    unselected = [name for name in cfg.estimator if name not in selected_estimators(cfg.estimator)]
    if not unselected:
        return cfg
    log.info("settings of estimator(s) %s ignored: this job does not run them", ", ".join(unselected))
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for name in unselected:
            del cfg.estimator[name]
    return cfg


def added_keys(node: DictConfig, key: str = "") -> Iterator[tuple[DictConfig, str]]:
    """(node, full key) of each key that ``+`` or ``++`` added where the node's schema declares none.

    Hydra refuses such a key without ``+``, but with it OmegaConf takes it silently: ``+audit.plann.x=1``
    (a typo) was ignored and the job ran without the setting meant, ``+dataset.image_size=-3`` on the
    digits reached the data module's constructor as a traceback. Hydra's own keys (``_target_``, …) pass.
    """
    schema = OmegaConf.get_type(node)
    declared = {spec.name for spec in fields(schema)} if is_dataclass(schema) else None
    for name in node.keys():
        path = f"{key}.{name}" if key else str(name)
        if declared is not None and name not in declared and not str(name).startswith("_"):
            yield node, path
            continue
        child = node._get_node(name)
        if isinstance(child, DictConfig) and not (child._is_missing() or child._is_none() or child._is_interpolation()):
            yield from added_keys(child, path)


def added_override(node: DictConfig, key: str) -> str:
    """The added key as a command line gives it (``audit.plann.x=1``): down to its first plain value."""
    child = node._get_node(key.rpartition(".")[2])
    value = OmegaConf.to_container(child, resolve=False) if OmegaConf.is_config(child) else child._value()
    while isinstance(value, dict) and value:
        name, value = next(iter(value.items()))
        key = f"{key}.{name}"
    return f"{key}={shown(value)}"
