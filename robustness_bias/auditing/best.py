"""The per-sample best bound: the smallest distance any attack found for a sample, as an estimator of its own.

Every attack's distance is an upper bound on the true distance to the boundary, so the smallest of
them is one too, and the tightest we have. DeepFool and CW overstate the distance by different
amounts on different samples (docs/benchmarks.md); if that overstatement differs between groups,
σ inherits it. The records' ``best`` estimator lets σ be read at the tightest bound: the audit
derives it (``audit.best=true``) from the records of the upper-bound estimators that ran, on the
samples that every one of them measured, and writes it beside theirs, so summaries, σ, reports and
the Python API treat it as any estimator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..estimators import FAILURES, UPPER
from ..records import BEST_BOUND as BEST

NONE = FAILURES[0]


def best_bound(frames: list[pd.DataFrame], name: str = BEST) -> pd.DataFrame | None:
    """The records of the best bound from the records of one audit's estimators (one frame each, as the
    engine builds them: one row per sample, misclassified ones included), or None when no upper-bound
    estimator ran.

    Per sample measured by every upper-bound estimator: the smallest successful distance, success
    where any succeeded, and the sum of their queries. Where all failed, the failure code they share,
    or ``budget_exhausted`` where theirs differ; a misclassified sample keeps its ``misclassified``.
    The precision is the attacks' if they share one, else theirs joined by ``+``.
    """
    attacks = [frame for frame in frames if len(frame) and (frame["bound"] == UPPER).all()]
    if not attacks:
        return None
    common = attacks[0]["sample_index"]
    for frame in attacks[1:]:
        common = common[common.isin(frame["sample_index"])]
    keyed = [frame.set_index("sample_index").loc[common.to_numpy()] for frame in attacks]
    distances = np.stack([np.where(f["success"].to_numpy(), f["distance"].to_numpy(float), np.inf) for f in keyed])
    success = np.stack([f["success"].to_numpy(bool) for f in keyed]).any(0)
    correct = keyed[0]["correct"].to_numpy(bool)
    distance = np.where(success, distances.min(0), np.where(correct, np.inf, np.nan))
    failures = np.stack([f["failure"].astype(str).to_numpy() for f in keyed])
    shared = (failures == failures[0]).all(0)
    failure = np.where(success, NONE, np.where(shared, failures[0], FAILURES[1]))
    precisions = list(dict.fromkeys(str(f["precision"].iloc[0]) for f in keyed)) if len(common) else ["fp32"]
    return keyed[0].reset_index().assign(estimator=name, precision="+".join(precisions), distance=distance,
                                         bound=UPPER, success=success,
                                         queries=sum(f["queries"].to_numpy() for f in keyed), failure=failure)
