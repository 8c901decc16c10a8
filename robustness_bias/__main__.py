"""``python -m robustness_bias [overrides]``: train and audit one model per Hydra job."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .data import DataError
    from .estimators import EstimatorMismatch
    from .pipeline import ConfigError, run

    try:
        result = run(cfg)
    except (ConfigError, DataError, EstimatorMismatch) as error:
        print(f"robustness_bias: error: {error}", file=sys.stderr)
        sys.exit(2)
    return result["test_accuracy"]


if __name__ == "__main__":
    main()
