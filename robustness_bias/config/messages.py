"""One line for each way a config can be wrong: Hydra's composition errors, OmegaConf's complaints, unknown keys.

Hydra prints composition errors in several lines and suggests ``+key=`` for a typo; these name the setting,
the options or rules there are, and a fix that works.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import fields, is_dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .rules import rule_of
from .store import CONFIG_DIR


def composition_problem(error: Exception) -> str:
    """One line for an error Hydra raised while composing the config: an unknown option, with the
    options there are; a value of the wrong type, with its rule; anything else in Hydra's words."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        return unknown_option(error)
    cause = error.__cause__
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    if cause is not None and hasattr(cause, "value") and rule_of(cause.object_type, cause.key):
        return setting_problem(cause)
    typed = re.search(r"To append to your config use \+(\S+)$", str(error))
    if typed and isinstance(getattr(cause, "parent_node", None), DictConfig) and \
            is_dataclass(OmegaConf.get_type(cause.parent_node)):
        return unknown_setting(cause.parent_node, cause.full_key, typed.group(1))
    reason = f" ({str(cause.msg).splitlines()[0]})" if cause is not None and cause.msg else ""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) + reason


def unknown_option(error: MissingConfigException) -> str:
    """Hydra lists the options of a group for ``model=nope``, but not for a list (``estimator=[nope]``)."""
    group, _, name = error.missing_cfg_file.rpartition("/")
    options = error.options or sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))
    return f"'{name}' is not an option of {group}. Available options in '{group}': {', '.join(options)}"


def setting_problem(error: OmegaConfBaseException) -> str:
    """One line for OmegaConf's complaint about one setting: its rule where the schema has one."""
    rule = rule_of(error.object_type, error.key)
    if rule is not None and hasattr(error, "value"):
        return rule.broken_by(error.full_key, error.value)
    reason = str(error.msg).splitlines()[0] if error.msg else type(error).__name__
    return f"{error.full_key}: {reason}"


def experiment_as_choice(overrides: list[str]) -> list[str]:
    """``+experiment=NAME`` as ``experiment=NAME``, which means the same here.

    ``experiment`` has a place (null) in the defaults list, so Hydra takes a choice for it but refuses
    an addition ("Multiple values for experiment"); Hydra's own parser finds the override.
    """
    parser = OverridesParser.create()

    def as_choice(argument: str) -> str:
        try:
            override = parser.parse_override(argument)
        except HydraException:
            return argument   # a flag such as --multirun; Hydra reports malformed overrides itself
        return argument[1:] if override.is_add() and override.key_or_group == "experiment" else argument

    return [as_choice(argument) for argument in overrides]


def unknown_setting(node: DictConfig, key: str, override: str) -> str:
    """One line for ``override`` (``key=value`` as typed, without ``+``), whose ``key`` the schema of ``node``
    does not declare: the settings it has, and a fix that works. Hydra's own line suggested adding the key
    with ``+``, which then passed a typo unseen or failed in a constructor; ``+`` is suggested only where
    the node's target takes the key, a setting only where the key is a typo of it."""
    parent, _, name = key.rpartition(".")
    schema = OmegaConf.get_type(node)
    known = [spec.name for spec in fields(schema) if not spec.name.startswith("_")]
    target = node.get("_target_")
    line = f"{override}: {parent or 'the config'} has no setting {name} ({schema.__name__}'s: {', '.join(known)}"
    if takes_keyword(target, name):
        return f"{line}), but {target} takes it. Fix: pass +{override}"
    line += f"; nor does {target} take it)" if target else ")"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)   # a typo; image_size is no batch_size (0.6)
    meant = f"{parent}.{close[0]}" if close and parent else (close[0] if close else None)
    if meant and override.startswith(f"{key}="):
        return f"{line}. Fix: pass {meant}{override[len(key):]}"
    if meant:
        return f"{line}. Fix: spell it {meant}, or leave {key} out"
    return f"{line}. Fix: leave {key} out"


def takes_keyword(target: str | None, name: str) -> bool:
    """Whether the callable a node instantiates (its ``_target_``) takes the keyword ``name``: a Lightning
    Trainer argument that conf/trainer does not set (``+trainer.gradient_clip_val=5``) is what ``+`` is for.
    A class's ``**kwargs`` are followed into its bases (the data modules pass theirs on); a function that
    takes ``**kwargs`` takes anything, as far as one can tell."""
    if not target:
        return False
    from hydra.utils import get_object

    try:
        found = get_object(str(target))
    except Exception:   # an unknown target is refused when the job instantiates it, in Hydra's words
        return False
    calls = [c.__init__ for c in found.__mro__ if "__init__" in vars(c) and c is not object] \
        if isinstance(found, type) else [found]
    for call in calls:
        parameters = inspect.signature(call).parameters
        if name in parameters and parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                            inspect.Parameter.KEYWORD_ONLY):
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return bool(calls)   # every one passes **kwargs on: no telling what the last one takes
