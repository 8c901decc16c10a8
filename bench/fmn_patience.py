"""What FMN's stopping rule (estimator.fmn.patience) costs in tightness and saves in passes, on the bench's
digits: each patience's run against the full run (every sample all steps, as the reference), on the same model
and inputs. Off by default for what this shows (docs/benchmarks.md, "FMN in the pool").

    python bench/fmn_patience.py [--model small_cnn] [--images 512] [--patience 10 20 30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from estimators import LEARNING_RATES, correct_inputs, trained_model  # noqa: E402  (bench/, this script's folder)
from robustness_bias.estimators import FastMinimumNorm  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="small_cnn", choices=sorted(LEARNING_RATES))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256, help="the pool's width")
    parser.add_argument("--patience", type=int, nargs="+", default=[10, 20, 30])
    args = parser.parse_args(argv)
    model, images, labels = trained_model(args.model, 32, "cpu")
    x, y = correct_inputs(model, images, labels, args.images)
    full = FastMinimumNorm()(model, x, y, batch_size=args.batch_size)
    print(f"{args.model}, {len(x)} correctly classified digits; the full run solved {int(full.success.sum())}")
    for patience in args.patience:
        stopped = FastMinimumNorm(patience=patience)(model, x, y, batch_size=args.batch_size)
        both = (stopped.success & full.success).numpy()
        ratio = (stopped.distance / full.distance).numpy()[both]
        print(f"  patience {patience}: {stopped.queries.sum() / full.queries.sum():.2f} of the full run's passes; "
              f"distances ÷ the full run's: median {np.median(ratio):.4f} [5% {np.quantile(ratio, 0.05):.4f}, "
              f"95% {np.quantile(ratio, 0.95):.4f}], {ratio.min():.4f} to {ratio.max():.4f}; "
              f"solved {int(stopped.success.sum())}")


if __name__ == "__main__":
    main()
