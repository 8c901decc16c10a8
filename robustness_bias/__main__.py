"""``python -m robustness_bias [overrides]``: train and audit one model per Hydra job."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def unknown_estimators(argv: list[str]) -> str | None:
    """Hydra names a missing option of a list-valued group without listing the options; we do."""
    available = sorted(p.stem for p in (CONFIG_DIR / "estimator").glob("*.yaml"))
    for arg in argv:
        match = re.fullmatch(r"[~+]*estimator=\[?([^\]]*)\]?", arg)
        if match:
            missing = [n.strip() for n in match.group(1).split(",") if n.strip() and n.strip() not in available]
            if missing:
                return (f"unknown estimator(s) {missing} in '{arg}'. Available options in 'estimator': "
                        f"{', '.join(available)}. Fix: e.g. estimator=[{available[0]}]")
    return None


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from .checkpoints import UnsafeCheckpoint
    from .data import DataError
    from .estimators import EstimatorMismatch
    from .lock import FolderBusy
    from .models import MissingWeights
    from .pipeline import ConfigError, run

    try:
        result = run(cfg)
    except (ConfigError, DataError, EstimatorMismatch, MissingWeights, UnsafeCheckpoint, FolderBusy) as error:
        print(f"robustness_bias: error: {error}", file=sys.stderr)
        sys.exit(2)
    return result.get("test_accuracy")   # None on DDP ranks other than 0, which write nothing


if __name__ == "__main__":
    problem = unknown_estimators(sys.argv[1:])
    if problem:
        print(f"robustness_bias: error: {problem}", file=sys.stderr)
        sys.exit(2)
    from .allocator import steady_cpu_allocator
    steady_cpu_allocator()
    main()
