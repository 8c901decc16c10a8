"""Where Hydra finds the configs and the schemas: ``conf/``, the ConfigStore, and the resolver the job folders use.

Importing this registers the schemas; the command line, the sweep check and tests that compose configs do.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from .schema import SCHEMAS


def find_config_dir() -> Path:
    """Hydra's ``conf/``: inside the installed package (the wheel ships it as ``robustness_bias/conf``),
    else at the top of the checkout this package runs from (a clone, an editable install)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml in {package} nor in {package.parent}: this installation of "
                            "robustness_bias lacks its configs. Fix: reinstall it from a wheel or a clone")


CONFIG_DIR = find_config_dir()


def overrides_tag(overrides) -> str:
    """``-<8 hex>`` naming a command line's overrides (none: empty), for the job folders ``conf/config.yaml``
    names by what the job is rather than by the clock, so that the same command finds its folder again and
    resumes or skips (docs/design.md, "Reliability")."""
    given = sorted(str(override) for override in overrides or ())
    return "-" + hashlib.sha256("\n".join(given).encode()).hexdigest()[:8] if given else ""


def register_schemas() -> None:
    """Each schema as ``schema/<name>`` in Hydra's ConfigStore, where conf/'s defaults lists find them."""
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        group, _, leaf = f"schema/{name}".rpartition("/")
        store.store(group=group, name=leaf, node=schema)


OmegaConf.register_new_resolver("overrides_tag", overrides_tag, replace=True)
register_schemas()
