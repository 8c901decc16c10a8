"""How far other audits of the same model and images moved from a base audit, estimator by estimator.

Each folder holds an audit's records.parquet and summary.csv (e.g. ``<job>/audits/final``). Per estimator
of the base that the other audit measured too: how many images succeeded in each, each image's distance
over its base distance on the images both measured (median, 5% and 95% quantiles, extremes, the share
bit-identical), and the largest change of σ over the groups both summaries give one. It is how
docs/results/faster_passes was made: one model audited eagerly, on channels-last images and in bf16.

    python bench/compare_audits.py BASE OTHER [OTHER ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from robustness_bias.report.cli import markdown  # noqa: E402

KEY = ["estimator", "sample_index"]
GROUP = ["estimator", "partition", "group"]


def compare(base: Path, other: Path) -> list[dict]:
    """One row per estimator that both audits ran."""
    records = pd.read_parquet(base / "records.parquet").merge(pd.read_parquet(other / "records.parquet"), on=KEY,
                                                                suffixes=("", "_other"))
    sigmas = pd.read_csv(base / "summary.csv")[GROUP + ["sigma"]].merge(
        pd.read_csv(other / "summary.csv")[GROUP + ["sigma"]], on=GROUP, suffixes=("", "_other")).dropna()
    rows = []
    for estimator, mine in records.groupby("estimator", observed=True):
        both = mine["success"] & mine["success_other"]
        ratio = (mine.loc[both, "distance_other"] / mine.loc[both, "distance"]).to_numpy()
        shift = sigmas.loc[sigmas["estimator"] == estimator]
        rows.append({"audit": other.parent.parent.name if other.name in ("final", "first", "middle") else other.name,
                     "estimator": estimator, "succeeded": int(mine["success_other"].sum()),
                     "base succeeded": int(mine["success"].sum()),
                     **({"ratio median": np.median(ratio), "ratio 5%": np.quantile(ratio, 0.05),
                         "ratio 95%": np.quantile(ratio, 0.95), "ratio min": ratio.min(), "ratio max": ratio.max(),
                         "identical": float((ratio == 1).mean())} if len(ratio) else {}),
                     "max |Δσ|": float((shift["sigma_other"] - shift["sigma"]).abs().max()) if len(shift) else np.nan,
                     "σ groups": len(shift)})
    return rows


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path)
    parser.add_argument("others", type=Path, nargs="+")
    args = parser.parse_args(argv)
    table = pd.DataFrame([row for other in args.others for row in compare(args.base, other)])
    print(markdown(table))
    return table


if __name__ == "__main__":
    main()
