"""A job's fingerprint: a hash of what shapes its results, which its records, chunks and checkpoints carry.

What only changes how fast or where a job runs (batch sizes, the shard, folders, where the data lies) is
left out, so that a resumed job may change it; the schema marks it (``shapes_results=False``). The data is
fingerprinted by what it is, in the job's ``dataset.json`` (robustness_bias.data: ``content``), not by
where it lies. The command line and the Python API fingerprint with the same :func:`fingerprint`.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

from omegaconf import DictConfig, OmegaConf

from ..records import settings_hash
from .job import selected_estimators


def fingerprint(settings) -> str:
    """The hash of ``settings`` (plain data, configs, schema instances, nested) less what shapes no result."""
    return settings_hash(shaping(settings))


def job_fingerprint(cfg: DictConfig) -> str:
    """The fingerprint of a command-line job: of :func:`results_settings`."""
    return settings_hash(results_settings(cfg))


def results_settings(cfg: DictConfig) -> dict:
    """The settings that shape a job's results, as plain data: every key but those the schema marks
    ``shapes_results=False`` (keys a command line adds with ``+`` count), of the selected estimators
    and their plans only."""
    selected = selected_estimators(cfg.estimator)
    left_out = shaping_no_result(OmegaConf.get_type(cfg))
    settings = {str(key): shaping(cfg[key]) for key in cfg if key not in left_out and key != "estimator"}
    settings["estimator"] = {name: shaping(cfg.estimator[name]) for name in selected}
    settings["audit"]["plan"] = {name: plan for name, plan in settings["audit"]["plan"].items() if name in selected}
    return settings


def estimator_settings(estimator, plan) -> dict:
    """What of an estimator object and its plan shapes its records: its class, its parameters (those of its
    schema, ``type(estimator).schema``, that shape results; every plain attribute of a class without one) and
    the plan's."""
    schema = getattr(type(estimator), "schema", None)
    if schema is not None:
        names = [spec.name for spec in fields(schema) if not spec.name.startswith("_")
                 and spec.name not in shaping_no_result(schema)]
    else:
        names = [key for key, value in vars(estimator).items()
                 if not key.startswith("_") and isinstance(value, (bool, int, float, str, type(None)))]
    return {"class": type(estimator).__qualname__, **{name: getattr(estimator, name) for name in names},
            "plan": shaping(plan)}


def shaping_no_result(schema) -> set[str]:
    """The fields of a schema (a dataclass; None: none) that change only how fast or where a job runs."""
    return {spec.name for spec in fields(schema) if not spec.metadata.get("shapes_results", True)} \
        if is_dataclass(schema) else set()


def unhashed_defaults(schema) -> dict:
    """The fields of a schema left out of the fingerprint while they hold their default (``hashed_at_default=
    False``: added after jobs were run), with that default."""
    return {spec.name: spec.default for spec in fields(schema)
            if not spec.metadata.get("hashed_at_default", True)} if is_dataclass(schema) else {}


def _at_unhashed_default(defaults: dict, key, value) -> bool:
    return key in defaults and value == defaults[key]


def shaping(node):
    """``node`` as plain data, interpolations resolved, less the fields its schema marks as shaping no result."""
    if OmegaConf.is_dict(node):
        schema = OmegaConf.get_type(node)
        left_out, defaults = shaping_no_result(schema), unhashed_defaults(schema)
        return {str(key): shaping(node[key]) for key in node
                if key not in left_out and not _at_unhashed_default(defaults, key, node[key])}
    if OmegaConf.is_list(node) or isinstance(node, (list, tuple)):
        return [shaping(value) for value in node]
    if is_dataclass(node) and not isinstance(node, type):
        left_out, defaults = shaping_no_result(type(node)), unhashed_defaults(type(node))
        return {spec.name: shaping(getattr(node, spec.name)) for spec in fields(node) if spec.name not in left_out
                and not _at_unhashed_default(defaults, spec.name, getattr(node, spec.name))}
    if isinstance(node, dict):
        return {str(key): shaping(value) for key, value in node.items()}
    return node
