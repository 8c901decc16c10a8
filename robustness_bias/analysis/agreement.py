"""Sign agreement of σ(P) between two estimators, or two epochs, on the same trained models and groups
(the paper's §7.1, §7.2 and §8.1 and its Table 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd

CELL = ["dataset", "model", "job", "partition", "group"]   # a job is one trained model


def paired(sigma: pd.DataFrame, left: tuple[str, str], right: tuple[str, str]) -> pd.DataFrame:
    """σ of two (estimator, epoch tag) pairs side by side, per cell where both are defined."""
    def pick(estimator, tag):
        chosen = sigma[(sigma["estimator"] == estimator) & (sigma["epoch_tag"] == tag)]
        return chosen.drop_duplicates(CELL).set_index(CELL)["sigma"]

    both = pd.concat([pick(*left).rename("left"), pick(*right).rename("right")], axis=1, join="inner").dropna()
    return both.reset_index()


def agreement(pairs: pd.DataFrame) -> dict:
    """How many cells have the same sign of σ on both sides, and the differences' mean and variance."""
    agree = int((np.sign(pairs["left"]) == np.sign(pairs["right"])).sum())
    total = len(pairs)
    difference = pairs["left"] - pairs["right"]
    return {"agree": agree, "cells": total, "share": agree / total if total else np.nan,
            "mean_difference": float(difference.mean()) if total else np.nan,
            "variance_difference": float(difference.var(ddof=0)) if total else np.nan}
